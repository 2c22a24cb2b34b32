"""Authentication comes first: right after well-formedness and the size limits, before the
schema and the business rules, so a message its sender did not sign is refused DS0B and its
content is never judged (nor described) for someone who may not be that sender."""

from __future__ import annotations

import pytest

from gateway.iso20022 import MessageRejected, SignatureInvalid, build, parse, sign_envelope
from tests.support.iso20022_samples import CONNECTOR_BIC, NOW, pacs009
from tests.unit.iso20022.signing_keys import CONNECTOR, OTHER, UNSIGNED


def _full_of_content_errors(envelope: bytes) -> bytes:
    """Schema faults (an element missing, one never admitted) and a business one (CtrlSum)."""
    broken = (
        envelope.replace(b"<NbOfTxs>1</NbOfTxs>", b"")
        .replace(b"<CtrlSum>10000.00</CtrlSum>", b"<CtrlSum>99.00</CtrlSum>")
        .replace(b"</CdtrAcct>", b"</CdtrAcct><Bogus>x</Bogus>")
    )
    assert broken.count(b"Bogus") == 2 and b"NbOfTxs" not in broken
    return broken


BROKEN = _full_of_content_errors(UNSIGNED)


def _refusal(raw: bytes, **kwargs: object) -> MessageRejected:
    with pytest.raises(MessageRejected) as err:
        parse(raw, now=NOW, **kwargs)  # type: ignore[arg-type]
    return err.value


def test_without_a_pinned_certificate_the_content_errors_are_what_is_refused() -> None:
    assert _refusal(BROKEN).code != "DS0B"  # the control: the content is indeed refused


def test_an_unsigned_envelope_full_of_content_errors_is_refused_ds0b() -> None:
    for kwargs in ({"cert_pem": CONNECTOR.cert}, {"certificate_of": lambda bic: CONNECTOR.cert}):
        err = _refusal(BROKEN, **kwargs)
        assert isinstance(err, SignatureInvalid) and err.code == "DS0B", kwargs
        assert err.xpath == "/BizMsg/AppHdr/Sgntr"


def test_a_wrongly_signed_envelope_full_of_content_errors_is_refused_ds0b() -> None:
    forged = sign_envelope(BROKEN, OTHER.key, OTHER.cert)
    assert _refusal(forged, cert_pem=CONNECTOR.cert).code == "DS0B"
    tampered = sign_envelope(UNSIGNED, CONNECTOR.key, CONNECTOR.cert).replace(
        b"<CtrlSum>10000.00</CtrlSum>", b"<CtrlSum>99.00</CtrlSum>"
    )
    assert _refusal(tampered, cert_pem=CONNECTOR.cert).code == "DS0B"  # not AM10


def test_a_validly_signed_envelope_with_content_errors_gets_its_content_code() -> None:
    signed = sign_envelope(BROKEN, CONNECTOR.key, CONNECTOR.cert)
    err = _refusal(signed, cert_pem=CONNECTOR.cert)
    assert err.code == _refusal(BROKEN).code and err.code != "DS0B"
    by_sender = _refusal(signed, certificate_of={CONNECTOR_BIC: CONNECTOR.cert}.get)
    assert by_sender.code == err.code


def test_the_sender_is_asked_for_only_when_the_header_names_a_bic() -> None:
    asked: list[str] = []

    def pinned(bic: str) -> bytes | None:
        asked.append(bic)
        return CONNECTOR.cert

    junk = "x" * 50_000
    for header_fault in (
        UNSIGNED.replace(
            f"<BICFI>{CONNECTOR_BIC}</BICFI>".encode(), f"<BICFI>{junk}</BICFI>".encode()
        ),
        UNSIGNED.replace(f"<BICFI>{CONNECTOR_BIC}</BICFI>".encode(), b""),
        UNSIGNED.replace(b"<Fr>", b"<From>").replace(b"</Fr>", b"</From>"),
    ):
        err = _refusal(header_fault, certificate_of=pinned)
        assert err.code == "DS0B" and "names no sender" in err.detail
    assert asked == []


def test_a_sender_without_a_certificate_is_refused_ds0b() -> None:
    err = _refusal(sign_envelope(BROKEN, OTHER.key, OTHER.cert), certificate_of=lambda bic: None)
    assert err.code == "DS0B" and "not registered" in err.detail


def test_a_bare_document_names_no_sender_and_carries_no_signature() -> None:
    bare = build(pacs009())
    assert _refusal(bare, cert_pem=CONNECTOR.cert).code == "DS0B"
    assert _refusal(bare, certificate_of=lambda bic: CONNECTOR.cert).code == "DS0B"


def test_what_precedes_authentication_keeps_its_own_codes() -> None:
    """Well-formedness, the size limit and the envelope's shape are checked before anyone is
    authenticated: they say nothing about the content."""
    assert _refusal(b"<BizMsg", cert_pem=CONNECTOR.cert).code == "FF01"
    one_child = UNSIGNED.split(b"<Document")[0] + b"</BizMsg>"
    err = _refusal(one_child, cert_pem=CONNECTOR.cert)
    assert err.code == "FF01" and err.xpath == "/BizMsg"
    deep = UNSIGNED.replace(b"</CdtrAcct>", b"</CdtrAcct>" + b"<a>" * 80 + b"</a>" * 80)
    err = _refusal(deep, cert_pem=CONNECTOR.cert)
    assert err.code == "FF01" and "nesting" in err.detail
