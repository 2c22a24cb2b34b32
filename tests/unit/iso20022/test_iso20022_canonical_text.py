"""The writers render canonical text, and the builder signs that text directly.

``build(..., signer=...)`` digests the rendered envelope as it is, without a C14N pass: that is
only right if the text already is its exclusive C14N form. These tests hold the writers to
it (for every message type, generated) against lxml's C14N, and check the signatures the
builder makes against both verifiers and against ``sign_envelope``'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from gateway.iso20022 import (
    Admi002,
    Camt029,
    Camt056,
    Message,
    SignatureInvalid,
    build,
    header_for,
    parse,
    sign_envelope,
    verify_envelope,
)
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, messages
from tests.unit.iso20022.signing_keys import CONNECTOR, OTHER, RSA, Pair


@dataclass(frozen=True)
class Keys:
    key_pem: bytes
    cert_pem: bytes


def keys(pair: Pair) -> Keys:
    return Keys(pair.key, pair.cert)


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"


def _c14n(data: bytes) -> bytes:
    return bytes(etree.tostring(etree.fromstring(data), method="c14n", exclusive=True))


def _header(message: Message) -> object:
    fr, to = (
        (message.assigner_bic, message.assignee_bic)
        if isinstance(message, Camt056 | Camt029)
        else (CONNECTOR_BIC, GATEWAY_BIC)
    )
    return header_for(message, from_bic=fr, to_bic=to, created=NOW)


@FAST
@given(messages)
def test_every_rendered_message_is_its_own_canonical_form(message: Message) -> None:
    for raw in (build(message), build(message, _header(message))):  # type: ignore[arg-type]
        assert raw.startswith(DECLARATION)
        assert raw[len(DECLARATION) :] == _c14n(raw)


def _admi(description: str) -> Admi002:
    return Admi002(
        related_ref="NONREF",
        reason="FF01",
        rejected=datetime(2025, 3, 14, 9, 30, tzinfo=UTC),
        description=description,
    )


def test_text_that_must_be_escaped_is_escaped_as_c14n_does_and_reads_back() -> None:
    text = "a & b <c> \"d\" 'e' \r\n\tf \u00e9\u4e2d\U0001f600"
    message = _admi(text)
    raw = build(message, _header(message))  # type: ignore[arg-type]
    assert raw[len(DECLARATION) :] == _c14n(raw)
    assert b"a &amp; b &lt;c&gt; \"d\" 'e' &#xD;\n\tf" in raw
    assert parse(raw, now=NOW).message == message


@pytest.mark.parametrize("bad", ["\x00", "\x08", "\x1f", "\ufffe", "\ud800"])
def test_text_xml_cannot_carry_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="XML compatible"):
        build(_admi(f"before{bad}after"))


def test_a_missing_value_is_refused_not_rendered_as_none() -> None:
    message = Admi002(related_ref=None, reason="FF01", rejected=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build(message)


_VALUE = re.compile(rb"<ds:SignatureValue>.*?</ds:SignatureValue>", re.S)


@pytest.mark.parametrize("pair", [CONNECTOR, RSA], ids=["ecdsa", "rsa"])
@FAST
@given(message=messages)
def test_the_builders_signature_verifies_and_is_sign_envelopes(
    pair: Pair, message: Message
) -> None:
    header = _header(message)
    signed = build(message, header, signer=keys(pair))  # type: ignore[arg-type]
    verify_envelope(signed, pair.cert)
    assert parse(signed, cert_pem=pair.cert, now=NOW).message == message
    with pytest.raises(SignatureInvalid):
        verify_envelope(signed, OTHER.cert)
    resigned = sign_envelope(build(message, header), pair.key, pair.cert)  # type: ignore[arg-type]
    assert _VALUE.sub(b"", signed) == _VALUE.sub(b"", resigned)


def test_the_builders_signature_verifies_with_signxml() -> None:
    from signxml import XMLVerifier  # type: ignore[attr-defined]

    message = _admi("a & b <c> \r\n")
    signed = build(message, _header(message), signer=keys(CONNECTOR))  # type: ignore[arg-type]
    XMLVerifier().verify(signed, x509_cert=CONNECTOR.cert.decode("ascii"), expect_references=1)


def test_a_bare_document_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="envelope"):
        build(_admi("x"), signer=keys(CONNECTOR))
