"""Envelope signatures: valid verifies; any changed byte or a wrong key fails."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.iso20022 import (
    MessageRejected,
    SignatureInvalid,
    build,
    parse,
    sign_envelope,
    verify_envelope,
)
from tests.support.iso20022_samples import CONNECTOR_BIC, NOW
from tests.unit.iso20022.signing_keys import CONNECTOR, MESSAGE, OTHER, RSA, UNSIGNED, Pair

SIGNED = sign_envelope(UNSIGNED, CONNECTOR.key, CONNECTOR.cert)


@pytest.mark.parametrize("pair", [CONNECTOR, RSA], ids=["ecdsa", "rsa"])
def test_signed_envelope_verifies_and_parses(pair: Pair) -> None:
    signed = sign_envelope(UNSIGNED, pair.key, pair.cert)
    verify_envelope(signed, pair.cert)
    parsed = parse(signed, cert_pem=pair.cert, now=NOW)
    assert parsed.signed
    assert parsed.message == MESSAGE


def test_signature_sits_in_the_header_sgntr() -> None:
    hdr = SIGNED[SIGNED.index(b"<AppHdr") : SIGNED.index(b"</AppHdr>")]
    assert b"<Sgntr><ds:Signature" in hdr
    assert b"xml-exc-c14n" in hdr
    assert b"enveloped-signature" in hdr


def test_wrong_key_fails() -> None:
    with pytest.raises(SignatureInvalid) as err:
        verify_envelope(SIGNED, OTHER.cert)
    assert err.value.code == "DS0B"


def test_unsigned_envelope_fails_when_a_certificate_is_pinned() -> None:
    with pytest.raises(SignatureInvalid):
        parse(UNSIGNED, cert_pem=CONNECTOR.cert, now=NOW)


def test_bare_document_fails_when_a_certificate_is_pinned() -> None:
    with pytest.raises(SignatureInvalid):
        parse(build(MESSAGE), cert_pem=CONNECTOR.cert, now=NOW)


def test_resigning_replaces_the_signature() -> None:
    twice = sign_envelope(SIGNED, OTHER.key, OTHER.cert)
    verify_envelope(twice, OTHER.cert)
    assert len(re.findall(rb"<ds:Signature[ >]", twice)) == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<BizMsgIdr>MSG-009-1<", b"<BizMsgIdr>MSG-009-2<"),
        (b"<CreDt>2025-03-14T09:30:00+00:00<", b"<CreDt>2025-03-14T09:31:00+00:00<"),
        (b'KZT">10000.00<', b'KZT">10001.00<'),
        (b"<Id>wallet-hsbk-7<", b"<Id>wallet-hsbk-8<"),
        (b"<Leg>DT<", b"<Leg>FX<"),
    ],
    ids=["header-id", "header-date", "amount", "creditor-wallet", "pvp-leg"],
)
def test_changed_content_fails(old: bytes, new: bytes) -> None:
    assert old in SIGNED
    with pytest.raises(SignatureInvalid):
        verify_envelope(SIGNED.replace(old, new), CONNECTOR.cert)


def _signed_region() -> tuple[int, int]:
    return SIGNED.index(b"<BizMsg"), len(SIGNED)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_changed_byte_in_header_or_document_fails(data: st.DataObject) -> None:
    start, end = _signed_region()
    # Bytes outside the signature element (which is excluded by the enveloped transform).
    sig_start, sig_end = SIGNED.index(b"<Sgntr>"), SIGNED.index(b"</Sgntr>") + 8
    pos = data.draw(
        st.integers(start, end - 1).filter(lambda i: not sig_start <= i < sig_end), label="pos"
    )
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != SIGNED[pos]), label="byte")
    tampered = SIGNED[:pos] + bytes([byte]) + SIGNED[pos + 1 :]
    with pytest.raises(MessageRejected):
        parse(tampered, cert_pem=CONNECTOR.cert, now=NOW)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_any_changed_byte_in_the_signature_fails(data: st.DataObject) -> None:
    lo = SIGNED.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    hi = SIGNED.index(b"</ds:SignatureValue>")
    pos = data.draw(st.integers(lo, hi - 1))
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    byte = data.draw(st.sampled_from(alphabet).filter(lambda b: b != SIGNED[pos]))
    tampered = SIGNED[:pos] + bytes([byte]) + SIGNED[pos + 1 :]
    with pytest.raises(MessageRejected):
        verify_envelope(tampered, CONNECTOR.cert)


def test_a_signature_in_non_canonical_base64_fails() -> None:
    # 64 signature bytes end in "x==": x carries 2 bits, and a decoder ignores the other 4.
    # Changing only those 4 decodes to the same bytes; the text must still be refused.
    hi = SIGNED.index(b"==</ds:SignatureValue>")
    last = SIGNED[hi - 1 : hi]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(last)
    same_bits = alphabet[index ^ 1 : (index ^ 1) + 1]
    tampered = SIGNED[: hi - 1] + same_bits + SIGNED[hi:]
    value = slice(hi - 86, hi + 2)  # the 88 characters of the SignatureValue
    assert base64.b64decode(tampered[value]) == base64.b64decode(SIGNED[value])
    assert tampered[value] != SIGNED[value]
    with pytest.raises(MessageRejected):
        verify_envelope(tampered, CONNECTOR.cert)


# --- The fixed-shape signer/verifier against signxml, the complete implementation ---------


def _signxml_sign(unsigned: bytes, pair: Pair, *, indent: bool = False, **options: object) -> bytes:
    """Sign the envelope with signxml, as another producer would (placeholder in Sgntr);
    ``indent``: with whitespace around the signature, as a pretty-printing producer writes."""
    from lxml import etree
    from signxml import XMLSigner  # type: ignore[attr-defined]

    root = etree.fromstring(unsigned)
    ns = root[0].nsmap[None]
    sgntr = etree.SubElement(root[0], f"{{{ns}}}Sgntr")
    placeholder = etree.SubElement(
        sgntr,
        "{http://www.w3.org/2000/09/xmldsig#}Signature",
        Id="placeholder",
        nsmap={"ds": "http://www.w3.org/2000/09/xmldsig#"},
    )
    if indent:
        sgntr.text, placeholder.tail = "\n      ", "\n    "
    signed = XMLSigner(**options).sign(  # type: ignore[arg-type]
        root, key=pair.key, cert=pair.cert.decode("ascii")
    )
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


@pytest.mark.parametrize("pair", [CONNECTOR, RSA], ids=["ecdsa", "rsa"])
def test_our_signature_verifies_with_signxml_and_is_its_shape(pair: Pair) -> None:
    from signxml import XMLVerifier  # type: ignore[attr-defined]

    ours = sign_envelope(UNSIGNED, pair.key, pair.cert)
    XMLVerifier().verify(ours, x509_cert=pair.cert.decode("ascii"), expect_references=1)
    theirs = _signxml_sign(
        UNSIGNED,
        pair,
        signature_algorithm="ecdsa-sha256" if pair is CONNECTOR else "rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    value = re.compile(rb"<ds:SignatureValue>.*?</ds:SignatureValue>", re.S)
    assert value.sub(b"", ours) == value.sub(b"", theirs)
    verify_envelope(theirs, pair.cert)


@pytest.mark.parametrize(
    "c14n",
    [
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/2006/12/xml-c14n11",
        "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    ],
    ids=["c14n-1.0", "c14n-1.1", "exc-with-comments"],
)
def test_another_producers_shape_verifies_through_signxml(c14n: str) -> None:
    theirs = _signxml_sign(
        UNSIGNED,
        CONNECTOR,
        signature_algorithm="ecdsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=c14n,
    )
    assert c14n.encode() in theirs
    verify_envelope(theirs, CONNECTOR.cert)
    with pytest.raises(SignatureInvalid):
        verify_envelope(theirs, OTHER.cert)
    with pytest.raises(SignatureInvalid):
        verify_envelope(theirs.replace(b'KZT">10000.00<', b'KZT">10001.00<'), CONNECTOR.cert)


def test_a_key_of_the_wrong_type_for_the_signature_method_fails() -> None:
    with pytest.raises(SignatureInvalid, match="not an RSA key"):
        verify_envelope(sign_envelope(UNSIGNED, RSA.key, RSA.cert), CONNECTOR.cert)
    with pytest.raises(SignatureInvalid, match="not an EC key"):
        verify_envelope(SIGNED, RSA.cert)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # Without the enveloped transform the digest cannot match the signed envelope.
        (
            b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>',
            b"",
        ),
        # A reference to something other than the whole envelope.
        (b'<ds:Reference URI="">', b'<ds:Reference URI="#MSG-009-1">'),
        # A weaker digest algorithm named in SignedInfo.
        (b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"),
        # A second reference.
        (b"</ds:Reference>", b'</ds:Reference><ds:Reference URI=""/>'),
    ],
    ids=["no-enveloped-transform", "partial-reference", "sha1-digest", "two-references"],
)
def test_a_changed_signature_shape_fails(old: bytes, new: bytes) -> None:
    assert old in SIGNED
    with pytest.raises(MessageRejected):
        verify_envelope(SIGNED.replace(old, new, 1), CONNECTOR.cert)


def test_a_comment_in_the_envelope_is_outside_the_signature_as_the_standard_says() -> None:
    # URI="" selects the document without comments: adding one changes nothing signed.
    commented = SIGNED.replace(b"<Document", b"<!-- note --><Document", 1)
    verify_envelope(commented, CONNECTOR.cert)


@pytest.mark.parametrize("pair", [CONNECTOR, RSA], ids=["ecdsa", "rsa"])
def test_whitespace_around_the_signature_stays_in_the_digest(pair: Pair) -> None:
    # The enveloped transform removes the Signature element, not the text around it.
    theirs = _signxml_sign(
        UNSIGNED,
        pair,
        indent=True,
        signature_algorithm="ecdsa-sha256" if pair is CONNECTOR else "rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    assert b"</ds:Signature>\n    </Sgntr>" in theirs
    verify_envelope(theirs, pair.cert)
    with pytest.raises(SignatureInvalid, match="digest"):
        verify_envelope(theirs.replace(b"\n    </Sgntr>", b"\n  </Sgntr>"), pair.cert)


def test_parse_verifies_against_the_certificate_of_the_sender_the_header_names() -> None:
    asked: list[str] = []

    def pinned(bic: str) -> bytes | None:
        asked.append(bic)
        return {CONNECTOR_BIC: CONNECTOR.cert}.get(bic)

    parsed = parse(SIGNED, certificate_of=pinned, now=NOW)
    assert parsed.signed and parsed.message == MESSAGE and asked == [CONNECTOR_BIC]
    with pytest.raises(SignatureInvalid, match="not registered"):
        parse(SIGNED, certificate_of=lambda bic: None, now=NOW)
    with pytest.raises(SignatureInvalid):
        parse(SIGNED, certificate_of=lambda bic: OTHER.cert, now=NOW)
    with pytest.raises(SignatureInvalid):
        parse(UNSIGNED, certificate_of=pinned, now=NOW)


def test_a_refused_signature_names_the_message_it_refuses() -> None:
    with pytest.raises(SignatureInvalid) as err:
        parse(SIGNED, cert_pem=OTHER.cert, now=NOW)
    assert err.value.msg_id == MESSAGE.msg_id == "MSG-009-1"
