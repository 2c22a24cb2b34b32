"""XML Signature of the envelope: enveloped, exclusive C14N, SHA-256, in AppHdr/Sgntr.

The signature's single reference is URI="" (the whole envelope: header and document) with
the enveloped-signature transform, so any change to either fails verification. The receiver
verifies against the sender's pinned certificate only; certificates in KeyInfo are ignored.
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from signxml import (  # type: ignore[attr-defined]
    DigestAlgorithm,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.algorithms import CanonicalizationMethod
from signxml.exceptions import InvalidInput as SignxmlInvalidInput
from signxml.exceptions import SignXMLException

from gateway.config import Iso20022Settings
from gateway.iso20022.errors import FF01, MessageRejected, SignatureInvalid
from gateway.iso20022.xmlsafe import APPHDR_TAG, DSIG_NS, ENVELOPE_TAG, HEAD_NS, parse_bytes

_SGNTR = f"{{{HEAD_NS}}}Sgntr"
_DS_SIGNATURE = f"{{{DSIG_NS}}}Signature"
_DEFAULT = Iso20022Settings()


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


@functools.lru_cache(maxsize=16)
def _private_key(pem: bytes) -> Any:
    """The parsed key, kept: parsing a PEM key cost ~12 % of a signature."""
    return load_pem_private_key(pem, password=None)


@functools.lru_cache(maxsize=64)
def _certificate(pem: bytes) -> x509.Certificate:
    """The parsed pinned certificate, kept (verification parsed it on every message)."""
    return x509.load_pem_x509_certificate(pem)


def _envelope(data: bytes) -> etree._Element:
    root = parse_bytes(data, max_bytes=_DEFAULT.max_message_bytes, max_depth=_DEFAULT.max_depth)
    if root.tag != ENVELOPE_TAG or len(root) != 2 or root[0].tag != APPHDR_TAG:
        raise MessageRejected(
            FF01, "only an envelope (AppHdr + Document) can be signed", xpath="/BizMsg"
        )
    return root


def sign_envelope(data: bytes, key_pem: str | bytes, cert_pem: str | bytes) -> bytes:
    """Sign an envelope; any previous signature is replaced. RSA or EC keys (SHA-256)."""
    root = _envelope(data)
    header = root[0]
    for old in header.findall(_SGNTR):
        header.remove(old)
    key: Any = _private_key(_as_bytes(key_pem))
    if isinstance(key, rsa.RSAPrivateKey):
        method = SignatureMethod.RSA_SHA256
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        method = SignatureMethod.ECDSA_SHA256
    else:
        raise ValueError("signing key must be RSA or EC")
    sgntr = etree.SubElement(header, _SGNTR)
    etree.SubElement(sgntr, _DS_SIGNATURE, Id="placeholder", nsmap={"ds": DSIG_NS})
    signer = XMLSigner(
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(root, key=key, cert=_as_bytes(cert_pem).decode("ascii"))
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def verify_tree(root: etree._Element, cert_pem: str | bytes, *, msg_id: str | None = None) -> None:
    """Verify an already-parsed envelope against the pinned certificate."""
    if root.tag != ENVELOPE_TAG:
        raise SignatureInvalid("a bare Document carries no signature", msg_id=msg_id)
    signatures = list(root.iter(_DS_SIGNATURE))
    sgntr = root[0].find(_SGNTR)
    if len(signatures) != 1 or sgntr is None or len(sgntr) != 1 or sgntr[0] is not signatures[0]:
        raise SignatureInvalid("exactly one signature, in AppHdr/Sgntr, is required", msg_id=msg_id)
    try:
        result = XMLVerifier().verify(
            etree.tostring(root),
            x509_cert=_certificate(_as_bytes(cert_pem)),
            expect_references=1,
            ignore_ambiguous_key_info=True,
        )
    # signxml also schema-checks the Signature element itself (lxml DocumentInvalid).
    except (SignXMLException, SignxmlInvalidInput, ValueError, etree.LxmlError) as exc:
        raise SignatureInvalid(f"signature does not verify: {exc}"[:300], msg_id=msg_id) from None
    signed = result[0].signed_xml if isinstance(result, list) else result.signed_xml
    if signed is None or signed.tag != ENVELOPE_TAG:
        raise SignatureInvalid("the signature must cover the whole envelope", msg_id=msg_id)


def verify_envelope(data: bytes, cert_pem: str | bytes) -> None:
    """Refuse (:class:`SignatureInvalid`, DS0B) unless ``data`` is signed by ``cert_pem``."""
    verify_tree(_envelope(data), cert_pem)


__all__ = ["sign_envelope", "verify_envelope", "verify_tree"]
