"""What the OpenAPI document says of each operation beyond its signature: examples of its
request and answers, and the refusals it can make. One table, keyed ``"METHOD /path"``;
:mod:`gateway.api.openapi` writes it into the document.

This module holds the operator's ledger and the partners' PvP;
:mod:`gateway.api.openapi_examples_exchange` the exchange's stablecoin and webhooks, and
:mod:`gateway.api.openapi_examples_public` the public routes.

Examples are the response and request types themselves (msgspec structs), so a renamed or
retyped field fails here, not in a reader's client; the completeness test validates each one
against its schema in the served document. Refusals are the error classes the operation's
service raises (their code, status and title come from the class); those every operation of a
shape makes (400 ``INVALID_INPUT``, 401, 403, 413, 415, a path that matches no route) and 429
on the rate-limited public routes are added by :mod:`gateway.problemdoc` and the mechanism.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from msgspec.structs import replace

from gateway.api import schemas as s
from gateway.api.partner import (
    AuditOut,
    InstructionCreate,
    InstructionOut,
    LegOut,
    MessageOut,
    PvPOut,
    ResolveCreate,
    SideIn,
    SideOut,
)
from gateway.db import TransientDatabaseError
from gateway.errors import GatewayError, IdempotencyConflict, Unavailable
from gateway.ledger import errors as le
from gateway.ledger import model as lm
from gateway.problemdoc import Refusal
from gateway.pvp.model import (
    FulfilmentMismatch,
    IllegalLegTransition,
    InstructionState,
    NotAwaitingOperator,
    NotYourWallet,
    PvPNotFound,
)

Refused = Refusal | type[GatewayError]


@dataclass(frozen=True)
class Documented:
    """One operation's examples and refusals.

    ``request``: an example body; ``responses``: an example answer per success status;
    ``parameters``: an example per path, query or header parameter (by its name in the
    document); ``refusals``: the problems its service can answer."""

    refusals: tuple[Refused, ...] = ()
    request: Any = None
    responses: Mapping[int, Any] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ shared sample values

AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
"""When the examples happen."""
LATER = AT + timedelta(seconds=4)
BANK_WALLET = "halyk-dt"
EXCHANGE = "ACME"
EXCHANGE_WALLET = "acme-dt"
SEGREGATED_WALLET = "stablecoin-0x5fbdb2315678afecb367f032d93f642f64180aa3"
AMOUNT = 150_000
"""1,500.00 KZT in tiyn: the amount every example moves."""
TX_HASH = "0x3b8e6cbb0b7c1f2d4a5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"
FULFILMENT = "5c1d0b2f8a7e6d5c4b3a29180716253443526170819a0b1c2d3e4f5a6b7c8d9e"
CONDITION = hashlib.sha256(bytes.fromhex(FULFILMENT)).hexdigest()
UETR = "8a562c67-ca16-48ba-b074-65581be6f011"

DB = (TransientDatabaseError,)
_DB = DB
"""Every operation that reads or writes the database: a conflict that outlived the retries."""
_WRITE = (*_DB, Refusal.of(Unavailable, "the ledger committer is stopping"))


def _wallet(
    wallet_id: str = BANK_WALLET,
    kind: lm.WalletKind = lm.WalletKind.PARTICIPANT,
    owner: str = "Halyk Bank",
    posted: int = 2_500_000,
    reserved: int = 0,
    status: lm.WalletStatus = lm.WalletStatus.OPEN,
) -> s.WalletOut:
    return s.WalletOut(
        id=wallet_id,
        kind=kind,
        owner=owner,
        currency="KZT",
        status=status,
        posted=posted,
        reserved=reserved,
        available=posted - reserved,
        created_at=AT,
    )


def _transfer(
    transfer_id: str, kind: lm.TransferKind, debit: str, credit: str, reference: str | None
) -> s.TransferOut:
    return s.TransferOut(
        id=transfer_id,
        kind=kind,
        debit_wallet_id=debit,
        credit_wallet_id=credit,
        amount=AMOUNT,
        currency="KZT",
        reference=reference,
        created_at=AT,
    )


def _lock(state: lm.LockState, fulfilment: str | None = None) -> s.LockOut:
    return s.LockOut(
        id="pvp-7f3a-dt",
        debit_wallet_id=BANK_WALLET,
        credit_wallet_id="nbk-escrow",
        amount=AMOUNT,
        currency="KZT",
        state=state,
        condition=CONDITION,
        fulfilment=fulfilment,
        reference="PvP 7f3a, DT leg",
        expires_at=AT + timedelta(minutes=10),
        created_at=AT,
        resolved_at=None if state is lm.LockState.PENDING else LATER,
    )


_TRANSFER_IN = s.TransferCreate(
    id="tr-2026-0001",
    debit_wallet_id=BANK_WALLET,
    credit_wallet_id=EXCHANGE_WALLET,
    amount=AMOUNT,
    currency="KZT",
    reference="settlement 2026-01-15",
)
_ISSUE_IN = s.IssuanceCreate(
    id="iss-2026-0001", wallet_id=BANK_WALLET, amount=AMOUNT, reference="issuance order 17"
)
_LOCK_IN = s.LockCreate(
    id="pvp-7f3a-dt",
    debit_wallet_id=BANK_WALLET,
    credit_wallet_id="nbk-escrow",
    amount=AMOUNT,
    expires_at=AT + timedelta(minutes=10),
    condition=CONDITION,
    reference="PvP 7f3a, DT leg",
)

_MOVE = (
    le.WalletNotFound,
    le.InvalidId,
    le.InvalidAmount,
    IdempotencyConflict,
    le.InsufficientFunds,
    le.CurrencyMismatch,
    le.WalletFrozen,
    le.WalletClosed,
    le.NotAllowed,
    *_WRITE,
)
"""What a movement of DT (transfer, issuance, redemption) can be refused for."""

LEDGER: dict[str, Documented] = {
    "POST /v1/wallets": Documented(
        refusals=(le.InvalidId, le.WalletExists, le.NotAllowed, *_WRITE),
        request=s.WalletCreate(
            id=BANK_WALLET, kind=lm.WalletKind.PARTICIPANT, owner="Halyk Bank", currency="KZT"
        ),
        responses={201: _wallet(posted=0)},
    ),
    "GET /v1/wallets/{wallet_id}": Documented(
        refusals=(le.WalletNotFound, *_DB),
        parameters={"wallet_id": BANK_WALLET},
        responses={200: _wallet(reserved=AMOUNT)},
    ),
    "POST /v1/wallets/{wallet_id}/status": Documented(
        refusals=(
            le.WalletNotFound,
            le.IllegalTransition,
            le.WalletNotEmpty,
            le.NotAllowed,
            *_WRITE,
        ),
        parameters={"wallet_id": BANK_WALLET},
        request=s.WalletStatusChange(status=lm.WalletStatus.FROZEN),
        responses={200: _wallet(status=lm.WalletStatus.FROZEN)},
    ),
    "GET /v1/wallets/{wallet_id}/history": Documented(
        refusals=(le.WalletNotFound, *_DB),
        parameters={"wallet_id": BANK_WALLET, "cursor": 41, "limit": 100},
        responses={
            200: s.HistoryOut(
                wallet_id=BANK_WALLET,
                entries=[
                    s.EntryOut(42, "issue", "iss-2026-0001", AMOUNT, 0, 2_650_000, 0, AT),
                    s.EntryOut(43, "transfer", "tr-2026-0001", -AMOUNT, 0, 2_500_000, 0, AT),
                    s.EntryOut(44, "lock", "pvp-7f3a-dt", 0, AMOUNT, 2_500_000, AMOUNT, AT),
                ],
                next_cursor=44,
            )
        },
    ),
    "POST /v1/transfers": Documented(
        refusals=(le.SameWallet, *_MOVE),
        request=_TRANSFER_IN,
        responses={
            201: _transfer(
                "tr-2026-0001",
                lm.TransferKind.TRANSFER,
                BANK_WALLET,
                EXCHANGE_WALLET,
                "settlement 2026-01-15",
            )
        },
    ),
    "GET /v1/transfers/{transfer_id}": Documented(
        refusals=(le.TransferNotFound, *_DB),
        parameters={"transfer_id": "tr-2026-0001"},
        responses={
            200: _transfer(
                "tr-2026-0001",
                lm.TransferKind.TRANSFER,
                BANK_WALLET,
                EXCHANGE_WALLET,
                "settlement 2026-01-15",
            )
        },
    ),
    "POST /v1/issuances": Documented(
        refusals=_MOVE,
        request=_ISSUE_IN,
        responses={
            201: _transfer(
                "iss-2026-0001",
                lm.TransferKind.ISSUE,
                "issuance-KZT",
                BANK_WALLET,
                "issuance order 17",
            )
        },
    ),
    "POST /v1/redemptions": Documented(
        refusals=_MOVE,
        request=s.IssuanceCreate(
            id="red-2026-0001", wallet_id=BANK_WALLET, amount=AMOUNT, reference="order 18"
        ),
        responses={
            201: _transfer(
                "red-2026-0001", lm.TransferKind.REDEEM, BANK_WALLET, "issuance-KZT", "order 18"
            )
        },
    ),
    "POST /v1/batches": Documented(
        refusals=(
            le.SameWallet,
            le.WalletExists,
            le.LockNotFound,
            le.LockAlreadyResolved,
            le.LockExpired,
            le.ConditionMismatch,
            le.IllegalTransition,
            le.WalletNotEmpty,
            *_MOVE,
        ),
        request=s.BatchCreate(
            operations=[
                s.OpenWalletOp(id=BANK_WALLET, kind=lm.WalletKind.PARTICIPANT, owner="Halyk Bank"),
                s.IssueOp(id="iss-2026-0001", wallet_id=BANK_WALLET, amount=AMOUNT),
                s.TransferOp(
                    id="tr-2026-0001",
                    debit_wallet_id=BANK_WALLET,
                    credit_wallet_id=EXCHANGE_WALLET,
                    amount=AMOUNT,
                ),
            ]
        ),
        responses={
            200: s.BatchOut(
                results=[
                    _wallet(posted=0),
                    _transfer(
                        "iss-2026-0001", lm.TransferKind.ISSUE, "issuance-KZT", BANK_WALLET, None
                    ),
                    _transfer(
                        "tr-2026-0001",
                        lm.TransferKind.TRANSFER,
                        BANK_WALLET,
                        EXCHANGE_WALLET,
                        None,
                    ),
                ]
            )
        },
    ),
    "GET /v1/ledger/invariants": Documented(
        refusals=_DB,
        responses={
            200: s.InvariantsOut(ok=True, total_posted=0, issued_minus_redeemed=0, violations=[])
        },
    ),
    "POST /v1/locks": Documented(
        refusals=(le.SameWallet, *_MOVE),
        request=_LOCK_IN,
        responses={201: _lock(lm.LockState.PENDING)},
    ),
    "GET /v1/locks/{lock_id}": Documented(
        refusals=(le.LockNotFound, *_DB),
        parameters={"lock_id": "pvp-7f3a-dt"},
        responses={200: _lock(lm.LockState.PENDING)},
    ),
    "POST /v1/locks/{lock_id}/commit": Documented(
        refusals=(
            le.LockNotFound,
            le.LockAlreadyResolved,
            le.LockExpired,
            le.ConditionMismatch,
            le.WalletClosed,
            *_WRITE,
        ),
        parameters={"lock_id": "pvp-7f3a-dt"},
        request=s.LockCommit(fulfilment=FULFILMENT),
        responses={200: _lock(lm.LockState.POSTED, FULFILMENT)},
    ),
    "POST /v1/locks/{lock_id}/release": Documented(
        refusals=(le.LockNotFound, le.LockAlreadyResolved, le.LockExpired, *_WRITE),
        parameters={"lock_id": "pvp-7f3a-dt"},
        request=s.LockRelease(),
        responses={200: _lock(lm.LockState.VOIDED)},
    ),
}


# ------------------------------------------------------------------ partners: PvP

_SELL = SideOut("KZT", AMOUNT, BANK_WALLET)
_BUY = SideOut("AED", 1_100, "AE070331234567890123456")
_INSTRUCTION = InstructionOut(
    instruction_id="INSTR-2026-0001",
    state=InstructionState.MATCHED,
    party_bic="HSBKKZKX",
    counterparty_bic="CBAUAEAA",
    sell=_SELL,
    buy=_BUY,
    value_time=AT,
    created_at=AT,
    updated_at=LATER,
    reason=None,
    pvp_id="PVP-7F3A",
    uetr=UETR,
)


def _leg(state: str, status: str, alert: bool) -> LegOut:
    return LegOut(
        uetr=UETR,
        state=state,
        status=status,
        reason=None,
        pvp_id="PVP-7F3A",
        leg="DT",
        end_to_end_id="INSTR-2026-0001",
        amount=AMOUNT,
        currency="KZT",
        debtor_account=BANK_WALLET,
        creditor_account="nbk-escrow",
        condition=CONDITION,
        deadline=AT + timedelta(minutes=10),
        lock_id="pvp-" + UETR,
        status_requests=1 if alert else 0,
        status_requested_at=AT + timedelta(minutes=10) if alert else None,
        alert=alert,
        alert_at=AT + timedelta(minutes=15) if alert else None,
        resolved_by=None,
        decision="COMMIT" if state == "settled" else None,
        decision_cause=("operator" if alert else "fulfilment") if state == "settled" else None,
        decided_at=LATER if state == "settled" else None,
        created_at=AT,
        updated_at=LATER,
    )


_PVP = PvPOut(
    ref="INSTR-2026-0001",
    pvp_id="PVP-7F3A",
    decision="commit",
    instruction=_INSTRUCTION,
    legs=[_leg("settled", "ACSC", alert=False)],
    messages=[
        MessageOut("in", "pacs.009.001.08", "CNX-20260115-0001", "9f" * 32, AT, None),
        MessageOut("out", "pacs.002.001.10", "DTG-20260115-0002", "4e" * 32, LATER, None),
    ],
    audit=[],
)
_ENVELOPE = (
    '<Envelope xmlns="urn:kz:dt-gateway:xsd:envelope.001.001.01">'
    '<AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02">'
    "<Fr><FIId><FinInstnId><BICFI>SWCNXXKZ</BICFI></FinInstnId></FIId></Fr>"
    "<To><FIId><FinInstnId><BICFI>NBRKKZKX</BICFI></FinInstnId></FIId></To>"
    "<BizMsgIdr>CNX-20260115-0001</BizMsgIdr><MsgDefIdr>pacs.009.001.08</MsgDefIdr>"
    "<CreDt>2026-01-15T09:30:00Z</CreDt><Sgntr><!-- XML Signature --></Sgntr></AppHdr>"
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.009.001.08"><!-- ... --></Document>'
    "</Envelope>"
)
_CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY3R... (the gateway's signing certificate)\n"
    "-----END CERTIFICATE-----\n"
)

PARTNER: dict[str, Documented] = {
    "POST /v1/pvp": Documented(
        refusals=(IdempotencyConflict, NotYourWallet, le.CurrencyMismatch, *_DB),
        request=InstructionCreate(
            instruction_id="INSTR-2026-0001",
            party_bic="HSBKKZKX",
            counterparty_bic="CBAUAEAA",
            sell=SideIn("KZT", AMOUNT, BANK_WALLET),
            buy=SideIn("AED", 1_100, "AE070331234567890123456"),
            value_time=AT,
        ),
        responses={
            201: replace(_INSTRUCTION, state=InstructionState.ACCEPTED, pvp_id=None, uetr=None),
            200: _INSTRUCTION,
        },
    ),
    "GET /v1/pvp": Documented(refusals=_DB, responses={200: [_leg("locked", "ACSP", True)]}),
    "GET /v1/pvp/{ref}": Documented(
        refusals=(PvPNotFound, *_DB), parameters={"ref": "INSTR-2026-0001"}, responses={200: _PVP}
    ),
    "POST /v1/pvp/{ref}/resolve": Documented(
        refusals=(
            PvPNotFound,
            NotAwaitingOperator,
            IllegalLegTransition,
            FulfilmentMismatch,
            le.LockAlreadyResolved,
            le.LockExpired,
            le.ConditionMismatch,
            *_DB,
        ),
        parameters={"ref": "PVP-7F3A"},
        request=ResolveCreate(
            action="commit",
            reason="connector confirmed COMMIT by phone, ticket 4711",
            fulfilment=FULFILMENT,
        ),
        responses={
            200: PvPOut(
                ref="PVP-7F3A",
                pvp_id="PVP-7F3A",
                decision="commit",
                instruction=_INSTRUCTION,
                legs=[_leg("settled", "ACSC", alert=True)],
                messages=[],
                audit=[
                    AuditOut(
                        UETR,
                        "commit",
                        "key_3a9e",
                        "operator on duty",
                        "connector confirmed COMMIT by phone, ticket 4711",
                        LATER,
                    )
                ],
            )
        },
    ),
    "GET /iso20022/certificate": Documented(responses={200: _CERTIFICATE}),
    "POST /iso20022/messages": Documented(
        refusals=(
            Refusal(405, "METHOD_NOT_ALLOWED", "Method Not Allowed", "only POST"),
            Refusal(413, "TOO_LARGE", "Request Entity Too Large", "the envelope is too large"),
            Refusal(
                415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported Media Type", "send application/xml"
            ),
        ),
        request=_ENVELOPE,
        responses={
            202: {"msg_id": "CNX-20260115-0001", "sha256": "9f" * 32, "duplicate": False},
            400: (
                '<Envelope xmlns="urn:kz:dt-gateway:xsd:envelope.001.001.01">'
                "<!-- AppHdr, signed --><Document "
                'xmlns="urn:iso:std:iso:20022:tech:xsd:admi.002.001.01"><admi.002.001.01>'
                "<RltdRef><Ref>CNX-20260115-0001</Ref></RltdRef><Rsn><RjctgPtyRsn>FF01"
                "</RjctgPtyRsn><RsnDesc>signature invalid</RsnDesc></Rsn></admi.002.001.01>"
                "</Document></Envelope>"
            ),
        },
    ),
}


__all__ = [
    "AMOUNT",
    "AT",
    "EXCHANGE",
    "EXCHANGE_WALLET",
    "LATER",
    "LEDGER",
    "PARTNER",
    "SEGREGATED_WALLET",
    "TX_HASH",
    "Documented",
    "Refused",
]
