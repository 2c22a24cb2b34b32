"""Hostile input is refused, with the right reason code, before any work is done."""

from __future__ import annotations

import pytest

from gateway.config import Iso20022Settings
from gateway.iso20022 import MessageRejected, build, header_for, parse
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, pacs009

VALID = build(
    pacs009(), header_for(pacs009(), from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
)

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.009.001.08">&xxe;</Document>'
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><lolz>&lol9;</lolz>"
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE Document SYSTEM "http://127.0.0.1:9/evil.dtd">'
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.009.001.08"/>'
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p">%p;]><d/>'
)


def _refused(data: bytes, settings: Iso20022Settings | None = None) -> MessageRejected:
    with pytest.raises(MessageRejected) as err:
        parse(data, settings=settings, now=NOW)
    return err.value


@pytest.mark.parametrize(
    "data",
    [XXE, BILLION_LAUGHS, EXTERNAL_DTD, PARAMETER_ENTITY],
    ids=["xxe", "billion-laughs", "external-dtd", "parameter-entity"],
)
def test_dtds_and_entities_are_refused(data: bytes) -> None:
    err = _refused(data)
    assert err.code == "FF01"
    assert "DTD" in err.detail


def test_doctype_hidden_behind_another_declared_encoding_is_still_refused() -> None:
    data = XXE.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert _refused(data).code == "FF01"


def test_ten_megabyte_body_is_refused_by_size() -> None:
    data = b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>"
    err = _refused(data)
    assert err.code == "FF01"
    assert "limit" in err.detail


def test_size_limit_comes_from_settings() -> None:
    assert _refused(VALID, Iso20022Settings(max_message_bytes=len(VALID) - 1)).code == "FF01"
    parse(VALID, settings=Iso20022Settings(max_message_bytes=len(VALID)), now=NOW)


def test_ten_thousand_deep_nesting_is_refused() -> None:
    assert _refused(b"<a>" * 10_000 + b"</a>" * 10_000).code == "FF01"


def test_nesting_deeper_than_the_configured_limit_is_refused() -> None:
    err = _refused(b"<a>" * 100 + b"</a>" * 100)
    assert err.code == "FF01"
    assert "nesting" in err.detail
    shallow = Iso20022Settings(max_depth=5)
    assert "nesting" in _refused(VALID, shallow).detail


@pytest.mark.parametrize(
    "data",
    [
        VALID.replace(b"E2E-1", b"E2E-\xff\xfe"),
        VALID.replace(b"wallet", b"w\xc3allet"),
        "<a>x</a>".encode("utf-16"),
    ],
    ids=["invalid-bytes", "truncated-sequence", "utf-16"],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    assert _refused(data).code == "FF01"


@pytest.mark.parametrize(
    "data",
    [
        VALID.replace(b"urn:iso:std:iso:20022:tech:xsd:pacs.009.001.08", b"urn:evil:pacs.009"),
        VALID.replace(b"pacs.009.001.08", b"pacs.009.001.09"),
        VALID.replace(b"urn:kz:dt-gateway:xsd:envelope.001.001.01", b"urn:other:envelope"),
        VALID.replace(b"urn:iso:std:iso:20022:tech:xsd:head.001.001.02", b"urn:x:head"),
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"><x/></Document>',
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><x/></Document>',
        b"<Document><FICdtTrf/></Document>",
    ],
    ids=[
        "foreign-ns",
        "newer-version",
        "envelope-ns",
        "header-ns",
        "pacs.008",
        "camt.053",
        "no-ns",
    ],
)
def test_wrong_namespace_version_or_unknown_type_is_refused(data: bytes) -> None:
    err = _refused(data)
    assert err.code == "FF01"


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"not xml", b"<a>", b"<a></b>", VALID[:-20], b"<?xml version='1.0'?>"],
)
def test_malformed_xml_is_refused(data: bytes) -> None:
    assert _refused(data).code == "FF01"


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(MessageRejected):
        parse(VALID.decode(), now=NOW)  # type: ignore[arg-type]


def test_envelope_with_extra_document_is_refused() -> None:
    doc_start = VALID.index(b"<Document")
    doc = VALID[doc_start : VALID.rindex(b"</BizMsg>")]
    data = VALID.replace(b"</BizMsg>", doc + b"</BizMsg>")
    assert _refused(data).code == "FF01"
