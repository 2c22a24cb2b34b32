"""XML Signature of the envelope: enveloped, exclusive C14N, SHA-256, in AppHdr/Sgntr.

The signature's single reference is URI="" (the whole envelope: header and document) with
the enveloped-signature transform, so any change to either fails verification. The receiver
verifies against the sender's pinned certificate only; certificates in KeyInfo are ignored.

Our envelopes always carry the same signature shape (one reference, URI="", the transforms
enveloped-signature then exclusive C14N, SHA-256, ECDSA or RSA). That shape is signed and
verified here directly with lxml's C14N and ``cryptography``: about a fifth of signxml's cost,
which was the largest single item in a PvP's CPU time. A signature of any other shape (another
producer's choice of transforms or algorithms) is verified by signxml, the complete
implementation, so partners are not tied to our serializer. Both paths are tested against
each other: each verifies what the other signs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from signxml import XMLVerifier  # type: ignore[attr-defined]
from signxml.exceptions import InvalidInput as SignxmlInvalidInput
from signxml.exceptions import SignXMLException

from gateway.config import Iso20022Settings
from gateway.iso20022.errors import FF01, MessageRejected, SignatureInvalid
from gateway.iso20022.xmlsafe import APPHDR_TAG, DSIG_NS, ENVELOPE_TAG, HEAD_NS, parse_bytes

_SGNTR = f"{{{HEAD_NS}}}Sgntr"
_DEFAULT = Iso20022Settings()


def _ds(name: str) -> str:
    return f"{{{DSIG_NS}}}{name}"


_DS_SIGNATURE = _ds("Signature")
_SIGNED_INFO = _ds("SignedInfo")
_C14N_METHOD = _ds("CanonicalizationMethod")
_SIGNATURE_METHOD = _ds("SignatureMethod")
_REFERENCE = _ds("Reference")
_TRANSFORMS = _ds("Transforms")
_TRANSFORM = _ds("Transform")
_DIGEST_METHOD = _ds("DigestMethod")
_DIGEST_VALUE = _ds("DigestValue")
_SIGNATURE_VALUE = _ds("SignatureValue")
_KEY_INFO = _ds("KeyInfo")

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


class KeyPair(Protocol):
    """A signing key and its certificate (PEM): what signs our envelopes."""

    @property
    def key_pem(self) -> str | bytes: ...

    @property
    def cert_pem(self) -> str | bytes: ...


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


@functools.lru_cache(maxsize=16)
def _certificate_text(pem: bytes) -> str:
    """The certificate as KeyInfo carries it: the PEM body (base64 DER, 64-column lines)."""
    lines = [ln for ln in pem.decode("ascii").splitlines() if ln and not ln.startswith("-----")]
    return "\n".join(lines) + "\n"


def _c14n(node: etree._Element | etree._ElementTree) -> bytes:
    """Exclusive C14N; a tree it cannot canonicalise (a relative namespace URI, say: now met
    before schema validation, since the signature is checked first) cannot carry our
    signature."""
    try:
        return bytes(etree.tostring(node, method="c14n", exclusive=True, with_comments=False))
    except etree.C14NError as exc:
        raise SignatureInvalid(f"the signed content cannot be canonicalised: {exc}") from exc


def _envelope(data: bytes) -> etree._Element:
    root = parse_bytes(data, max_bytes=_DEFAULT.max_message_bytes, max_depth=_DEFAULT.max_depth)
    if root.tag != ENVELOPE_TAG or len(root) != 2 or root[0].tag != APPHDR_TAG:
        raise MessageRejected(
            FF01, "only an envelope (AppHdr + Document) can be signed", xpath="/BizMsg"
        )
    return root


def _ec_width(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> int:
    return (key.curve.key_size + 7) // 8


def _signed_info(method: str, digest_b64: str, *, canonical: bool) -> str:
    """SignedInfo as text: in its canonical form (exclusive C14N of SignedInfo alone, which
    is what is signed), or as it is written inside the Signature element."""
    if canonical:
        open_ = f'<ds:SignedInfo xmlns:ds="{DSIG_NS}">'

        def empty(tag: str, algorithm: str) -> str:
            return f'<ds:{tag} Algorithm="{algorithm}"></ds:{tag}>'
    else:
        open_ = "<ds:SignedInfo>"

        def empty(tag: str, algorithm: str) -> str:
            return f'<ds:{tag} Algorithm="{algorithm}"/>'

    return (
        f"{open_}{empty('CanonicalizationMethod', EXC_C14N)}{empty('SignatureMethod', method)}"
        f'<ds:Reference URI=""><ds:Transforms>{empty("Transform", ENVELOPED)}'
        f"{empty('Transform', EXC_C14N)}</ds:Transforms>{empty('DigestMethod', SHA256)}"
        f"<ds:DigestValue>{digest_b64}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
    )


def signature_xml(digest: bytes, key_pem: str | bytes, cert_pem: str | bytes) -> str:
    """The ``ds:Signature`` element, as text, over a SHA-256 ``digest`` of the canonical
    envelope whose ``Sgntr`` is empty (what the enveloped-signature transform leaves).

    The one shape this module signs: one reference ``URI=""``, transforms enveloped-signature
    then exclusive C14N, SHA-256, ECDSA (P-256: r || s) or RSA PKCS#1 v1.5; the certificate in
    KeyInfo for information only (receivers verify against their pinned copy)."""
    key: Any = _private_key(_as_bytes(key_pem))
    if isinstance(key, rsa.RSAPrivateKey):
        method = RSA_SHA256
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        method = ECDSA_SHA256
    else:
        raise ValueError("signing key must be RSA or EC")
    digest_b64 = base64.b64encode(digest).decode("ascii")
    signed_info = _signed_info(method, digest_b64, canonical=True).encode("ascii")
    if method == ECDSA_SHA256:
        r, s = decode_dss_signature(key.sign(signed_info, ec.ECDSA(hashes.SHA256())))
        width = _ec_width(key)
        value = r.to_bytes(width, "big") + s.to_bytes(width, "big")
    else:
        value = key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())
    return (
        f'<ds:Signature xmlns:ds="{DSIG_NS}">{_signed_info(method, digest_b64, canonical=False)}'
        f"<ds:SignatureValue>{base64.b64encode(value).decode('ascii')}</ds:SignatureValue>"
        f"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>"
        f"{_certificate_text(_as_bytes(cert_pem))}</ds:X509Certificate></ds:X509Data>"
        f"</ds:KeyInfo></ds:Signature>"
    )


def sign_envelope(data: bytes, key_pem: str | bytes, cert_pem: str | bytes) -> bytes:
    """Sign an envelope given as bytes; any previous signature is replaced. RSA or EC keys
    (SHA-256). The builder signs what it renders without this parse
    (``build(..., signer=...)``); this is for envelopes from elsewhere."""
    root = _envelope(data)
    header = root[0]
    for old in header.findall(_SGNTR):
        header.remove(old)
    # Sgntr comes last in the header but for a CBPR+ related header (Rltd), which follows it.
    related = header.find(f"{{{HEAD_NS}}}Rltd")
    sgntr = etree.Element(_SGNTR)
    if related is None:
        header.append(sgntr)
    else:
        related.addprevious(sgntr)
    # The enveloped-signature transform removes the Signature, leaving Sgntr empty: digest
    # the envelope in exactly that state, before the Signature exists.
    digest = hashlib.sha256(_c14n(root.getroottree())).digest()
    sgntr.append(etree.fromstring(signature_xml(digest, key_pem, cert_pem)))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _bare(el: etree._Element, tag: str, algorithm: str | None = None) -> bool:
    """``el`` is ``tag`` with no children, no text and (if given) exactly that Algorithm."""
    if el.tag != tag or len(el) or (el.text or "").strip():
        return False
    attrib = dict(el.attrib)
    return attrib == ({"Algorithm": algorithm} if algorithm is not None else {})


def _our_shape(signature: etree._Element) -> tuple[etree._Element, str, str, str] | None:
    """(SignedInfo, SignatureMethod, DigestValue, SignatureValue) if the signature has the
    one shape this module signs; None for any other shape (signxml then decides)."""
    parts = list(signature)
    if not 2 <= len(parts) <= 3 or dict(signature.attrib):
        return None
    info, value = parts[0], parts[1]
    if info.tag != _SIGNED_INFO or dict(info.attrib) or value.tag != _SIGNATURE_VALUE:
        return None
    if len(parts) == 3 and parts[2].tag != _KEY_INFO:
        return None
    if len(info) != 3 or not _bare(info[0], _C14N_METHOD, EXC_C14N):
        return None
    method_el, reference = info[1], info[2]
    method = method_el.get("Algorithm")
    if method not in (ECDSA_SHA256, RSA_SHA256) or not _bare(method_el, _SIGNATURE_METHOD, method):
        return None
    if reference.tag != _REFERENCE or dict(reference.attrib) != {"URI": ""} or len(reference) != 3:
        return None
    transforms, digest_method, digest_value = reference
    if (
        transforms.tag != _TRANSFORMS
        or dict(transforms.attrib)
        or len(transforms) != 2
        or not _bare(transforms[0], _TRANSFORM, ENVELOPED)
        or not _bare(transforms[1], _TRANSFORM, EXC_C14N)
        or not _bare(digest_method, _DIGEST_METHOD, SHA256)
        or digest_value.tag != _DIGEST_VALUE
        or len(digest_value)
        or len(value)
    ):
        return None
    return info, method, digest_value.text or "", value.text or ""


def _b64(text: str) -> bytes:
    """Decode base64, accepting only its canonical form (line breaks allowed): a decoder
    ignores the unused low bits of the last character, so without this check several
    different texts would carry one signature and a changed byte could still verify."""
    compact = "".join(text.split())
    decoded = base64.b64decode(compact, validate=True)
    if base64.b64encode(decoded).decode("ascii") != compact:
        raise ValueError("not canonical base64")
    return decoded


def _verify_our_shape(
    root: etree._Element,
    signature: etree._Element,
    shape: tuple[etree._Element, str, str, str],
    cert: x509.Certificate,
) -> str | None:
    """None if the signature verifies, else why not."""
    info, method, digest_text, value_text = shape
    try:
        digest, value = _b64(digest_text), _b64(value_text)
    except ValueError:
        return "DigestValue or SignatureValue is not canonical base64"
    public = cert.public_key()
    try:
        if method == ECDSA_SHA256:
            if not isinstance(public, ec.EllipticCurvePublicKey):
                return "the pinned certificate's key is not an EC key"
            width = _ec_width(public)
            if len(value) != 2 * width:
                return "ECDSA SignatureValue has the wrong length"
            der = encode_dss_signature(
                int.from_bytes(value[:width], "big"), int.from_bytes(value[width:], "big")
            )
            public.verify(der, _c14n(info), ec.ECDSA(hashes.SHA256()))
        else:
            if not isinstance(public, rsa.RSAPublicKey):
                return "the pinned certificate's key is not an RSA key"
            public.verify(value, _c14n(info), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "SignatureValue does not match SignedInfo"
    # Enveloped-signature transform: digest the envelope without the Signature element, but
    # with the text after it (lxml keeps that text as the element's tail: moved aside here).
    parent = signature.getparent()
    assert parent is not None
    index = parent.index(signature)
    previous = signature.getprevious()
    tail, before = signature.tail, (parent.text if previous is None else previous.tail)
    parent.remove(signature)
    if previous is None:
        parent.text = (before or "") + (tail or "")
    else:
        previous.tail = (before or "") + (tail or "")
    try:
        actual = hashlib.sha256(_c14n(root.getroottree())).digest()
    finally:
        if previous is None:
            parent.text = before
        else:
            previous.tail = before
        signature.tail = tail
        parent.insert(index, signature)
    if actual != digest:
        return "the envelope's digest does not match DigestValue"
    return None


def verify_tree(root: etree._Element, cert_pem: str | bytes, *, msg_id: str | None = None) -> None:
    """Verify an already-parsed envelope against the pinned certificate."""
    if root.tag != ENVELOPE_TAG:
        raise SignatureInvalid("a bare Document carries no signature", msg_id=msg_id)
    signatures = list(root.iter(_DS_SIGNATURE))
    sgntr = root[0].find(_SGNTR)
    if len(signatures) != 1 or sgntr is None or len(sgntr) != 1 or sgntr[0] is not signatures[0]:
        raise SignatureInvalid("exactly one signature, in AppHdr/Sgntr, is required", msg_id=msg_id)
    cert = _certificate(_as_bytes(cert_pem))
    shape = _our_shape(signatures[0])
    if shape is not None:
        problem = _verify_our_shape(root, signatures[0], shape, cert)
        if problem is not None:
            raise SignatureInvalid(f"signature does not verify: {problem}", msg_id=msg_id)
        return
    try:
        result = XMLVerifier().verify(
            etree.tostring(root),
            x509_cert=cert,
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


__all__ = ["KeyPair", "sign_envelope", "signature_xml", "verify_envelope", "verify_tree"]
