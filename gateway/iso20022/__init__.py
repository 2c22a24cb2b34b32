"""ISO 20022 message layer: catalogue, typed models, build, hardened parse, validation,
signatures. The only door between the gateway and the SWIFT CBDC-connector's XML.

Usage::

    raw = build(pacs009, header_for(pacs009, from_bic=..., to_bic=...), signer=keys)
    raw = sign_envelope(other_raw, key_pem, cert_pem)   # an envelope built elsewhere
    parsed = parse(raw, seen=dup_check, cert_pem=connector_cert)   # or MessageRejected

Errors (all :class:`gateway.errors.GatewayError`)::

    InvalidInput
     ├── MessageRejected       .code (ISO reason) .xpath .detail .msg_id
     │    ├── DuplicateMessage DU01 / AM05
     │    └── SignatureInvalid DS0B
     └── AmountError           AM12

This package imports nothing from gateway.ledger, pvp, api or db.
"""

from gateway.iso20022.amounts import (
    CURRENCY_EXPONENTS,
    MAX_MINOR_UNITS,
    from_iso_amount,
    to_iso_amount,
)
from gateway.iso20022.catalogue import CATALOGUE, MessageSpec
from gateway.iso20022.codec import (
    admi002_for,
    build,
    build_admi002,
    build_camt029,
    build_camt056,
    build_pacs002,
    build_pacs004,
    build_pacs009,
    build_pacs028,
    header_for,
    parse,
    wrap_envelope,
)
from gateway.iso20022.errors import (
    AmountError,
    DuplicateMessage,
    MessageRejected,
    SignatureInvalid,
)
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    CancellationRequest,
    CancellationResolution,
    CreditTransfer,
    Message,
    Money,
    OriginalRef,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    ParsedMessage,
    PaymentReturn,
    PvPTerms,
    StatusRequest,
    TransactionStatus,
)
from gateway.iso20022.rules import DuplicateCheck, InMemoryDuplicateCheck
from gateway.iso20022.signing import KeyPair, sign_envelope, verify_envelope
from gateway.iso20022.xmlsafe import ENVELOPE_NS, PVP_NS, SCHEMA_DIR

__all__ = [
    "CATALOGUE",
    "CURRENCY_EXPONENTS",
    "ENVELOPE_NS",
    "MAX_MINOR_UNITS",
    "PVP_NS",
    "SCHEMA_DIR",
    "Admi002",
    "AmountError",
    "AppHeader",
    "Camt029",
    "Camt056",
    "CancellationRequest",
    "CancellationResolution",
    "CreditTransfer",
    "DuplicateCheck",
    "DuplicateMessage",
    "InMemoryDuplicateCheck",
    "KeyPair",
    "Message",
    "MessageRejected",
    "MessageSpec",
    "Money",
    "OriginalRef",
    "Pacs002",
    "Pacs004",
    "Pacs009",
    "Pacs028",
    "ParsedMessage",
    "PaymentReturn",
    "PvPTerms",
    "SignatureInvalid",
    "StatusRequest",
    "TransactionStatus",
    "admi002_for",
    "build",
    "build_admi002",
    "build_camt029",
    "build_camt056",
    "build_pacs002",
    "build_pacs004",
    "build_pacs009",
    "build_pacs028",
    "from_iso_amount",
    "header_for",
    "parse",
    "sign_envelope",
    "to_iso_amount",
    "verify_envelope",
    "wrap_envelope",
]
