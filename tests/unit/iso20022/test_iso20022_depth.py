"""The depth limit holds whether or not the depth walk runs.

A document valid against our schemas nests at most as deep as the schema allows (8 levels for
the envelope), so the parser skips the walk for valid documents when the limit is at least
that, except under a wildcard (``AppHdr/Sgntr``), where anything may nest. Every refusal
still reports a too-deep document as such.
"""

from __future__ import annotations

import pytest

from gateway.config import Iso20022Settings
from gateway.iso20022 import MessageRejected, build, header_for, parse
from gateway.iso20022.catalogue import CATALOGUE
from gateway.iso20022.xmlsafe import (
    APPHDR_TAG,
    ENVELOPE_SCHEMA,
    ENVELOPE_TAG,
    HEAD_NS,
    schema_depth,
)
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, pacs009

VALID = build(
    pacs009(), header_for(pacs009(), from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
)
DS = "http://www.w3.org/2000/09/xmldsig#"


def _refused(data: bytes, settings: Iso20022Settings | None = None) -> MessageRejected:
    with pytest.raises(MessageRejected) as err:
        parse(data, settings=settings, now=NOW)
    return err.value


def test_schema_bounds_are_computed_from_the_xsds() -> None:
    env = schema_depth(ENVELOPE_SCHEMA, ENVELOPE_TAG)
    # BizMsg/Document/FIToFIPmtStsRpt/TxInfAndSts/OrgnlTxRef/Dbtr/Agt/FinInstnId/ClrSysMmbId
    # /ClrSysId/Cd, or as deep: a reason's originator's address
    assert env.bound == 12
    assert env.open_tags == (f"{{{HEAD_NS}}}Sgntr",)
    for spec in CATALOGUE.values():
        depth = schema_depth(spec.schema_file, spec.document_tag)
        assert depth.bound is not None and depth.bound <= 11
        assert depth.open_tags == ()
    assert schema_depth(ENVELOPE_SCHEMA, APPHDR_TAG.replace("AppHdr", "Nope")).bound is None


def test_the_limit_is_exact_for_valid_documents() -> None:
    parse(VALID, settings=Iso20022Settings(max_depth=8), now=NOW)
    assert "nesting" in _refused(VALID, Iso20022Settings(max_depth=7)).detail


def test_deep_content_under_the_signature_wildcard_is_refused() -> None:
    deep = f'<ds:Signature xmlns:ds="{DS}">' + "<ds:X>" * 70 + "</ds:X>" * 70 + "</ds:Signature>"
    data = VALID.replace(b"</AppHdr>", b"<Sgntr>" + deep.encode() + b"</Sgntr></AppHdr>")
    err = _refused(data)
    assert (err.code, "nesting" in err.detail) == ("FF01", True)
    shallow = data.replace(b"<ds:X>" * 70 + b"</ds:X>" * 70, b"<ds:X/>")
    parse(shallow, now=NOW)  # the wildcard admits it; a pinned certificate would check it


@pytest.mark.parametrize(
    "where",
    [b"<EndToEndId>", b"</AppHdr>", b"</Document>", b"</BizMsg>"],
    ids=["in-a-transaction", "in-the-header", "after-the-document", "third-child"],
)
def test_deep_content_is_refused_as_too_deep_before_any_schema_error(where: bytes) -> None:
    deep = b"<x>" * 100 + b"</x>" * 100
    err = _refused(VALID.replace(where, deep + where, 1))
    assert (err.code, "nesting" in err.detail) == ("FF01", True)


def test_deep_unknown_document_is_refused_as_too_deep() -> None:
    deep = b"<x>" * 100 + b"</x>" * 100
    ns = b"urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08"
    err = _refused(b'<Document xmlns="' + ns + b'">' + deep + b"</Document>")
    assert "nesting" in err.detail
    env = VALID[: VALID.index(b"<Document")] + b'<Document xmlns="' + ns + b'">' + deep
    err = _refused(env + b"</Document></BizMsg>")
    assert "nesting" in err.detail
