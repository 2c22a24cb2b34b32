"""parse() and build(): the layers between bytes and typed messages.

parse: size, DTD and encoding checks -> hardened lxml parse -> envelope shape -> signature
(when a certificate is pinned, against the sender's) -> message type and version -> schema
(lxml XMLSchema, usage guideline) -> depth -> typed model -> business rules -> duplicate hook.
Each layer refuses with a :class:`MessageRejected` carrying an ISO reason code and the XPath
of the fault. The signature comes before anything that reads the content: a message its
sender did not sign is refused DS0B and nothing else is said about it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from lxml import etree

from gateway.config import Iso20022Settings
from gateway.iso20022 import build as writers
from gateway.iso20022 import read as readers
from gateway.iso20022.catalogue import BY_DOCUMENT_TAG, CATALOGUE, MessageSpec
from gateway.iso20022.errors import (
    AM03,
    AM12,
    CH16,
    CH17,
    CH21,
    DT01,
    FF01,
    RC01,
    AmountError,
    MessageRejected,
    SignatureInvalid,
)
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    Message,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    ParsedMessage,
    trusted_constructor,
)
from gateway.iso20022.rules import DuplicateCheck, RuleLimits, check, check_pacs009
from gateway.iso20022.signing import KeyPair, signature_xml
from gateway.iso20022.xmlsafe import (
    APPHDR_TAG,
    ENVELOPE_SCHEMA,
    ENVELOPE_TAG,
    HEAD_NS,
    SCHEMA_DIR,
    check_depth,
    parse_bytes,
    parse_shallow,
    schema,
    validation_plan,
)

_DEFAULT_SETTINGS = Iso20022Settings()
_new_parsed = trusted_constructor(ParsedMessage)

# Hot messages: a reader that also returns (NbOfTxs, CtrlSum), and that message's rules
# (same checks, order, codes and XPaths as rules.check), called positionally.
_FAST: dict[str, tuple[Callable[[etree._Element], tuple[Any, Any]], Callable[..., None]]] = {
    Pacs009.MESSAGE_ID: (readers.pacs009_counted, check_pacs009),
}


def _limits(settings: Iso20022Settings) -> RuleLimits:
    return RuleLimits(
        max_transactions=settings.max_transactions,
        max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
        max_settlement_days=settings.max_settlement_days,
    )


_RULES_CACHE: dict[int, tuple[Iso20022Settings, RuleLimits]] = {}
_DEFAULT_LIMITS = _limits(_DEFAULT_SETTINGS)


def _rule_limits(settings: Iso20022Settings) -> RuleLimits:
    if settings is _DEFAULT_SETTINGS:
        return _DEFAULT_LIMITS
    hit = _RULES_CACHE.get(id(settings))
    if hit is not None and hit[0] is settings:
        return hit[1]
    limits = _limits(settings)
    _RULES_CACHE[id(settings)] = (settings, limits)
    return limits


def parse(
    data: bytes,
    *,
    seen: DuplicateCheck | None = None,
    cert_pem: str | bytes | None = None,
    certificate_of: Callable[[str], str | bytes | None] | None = None,
    settings: Iso20022Settings | None = None,
    now: datetime | None = None,
) -> ParsedMessage:
    """Untrusted bytes (an envelope, or a bare Document) -> a typed, validated message.

    ``certificate_of``: instead of ``cert_pem``, the pinned certificate of the sender the
    header names (From BIC), or None when that sender has none (refused, DS0B).
    ``cert_pem``: the sender's pinned certificate; when given, the envelope must carry a
    valid signature by it. ``seen``: the duplicate hook. Raises :class:`MessageRejected`.
    """
    cfg = settings or _DEFAULT_SETTINGS
    max_depth = cfg.max_depth
    # The depth walk runs on every refusal below (so a too-deep document is refused as such,
    # first), and on an accepted one only when the schema does not bound its depth.
    root = parse_shallow(data, max_bytes=cfg.max_message_bytes)
    root_tag = root.tag
    header_el: etree._Element | None
    if root_tag == ENVELOPE_TAG:
        if len(root) != 2 or root[0].tag != APPHDR_TAG:
            check_depth(root, max_depth)
            raise _envelope_rejection(root)
        header_el, doc = root[0], root[1]
    else:
        header_el, doc = None, root
    if cert_pem is None and certificate_of is not None:
        cert_pem = _sender_certificate(root, header_el, doc, certificate_of, max_depth)
    if cert_pem is not None:
        _authenticate(root, header_el, doc, cert_pem, max_depth)
    if header_el is not None:
        spec = BY_DOCUMENT_TAG.get(doc.tag) or _spec_of(
            doc.tag, "/BizMsg/Document", root, max_depth
        )
        schema_file = ENVELOPE_SCHEMA
    else:
        spec = BY_DOCUMENT_TAG.get(root_tag) or _spec_of(root_tag, "/Document", root, max_depth)
        schema_file = spec.schema_file
    validator, walk = validation_plan(schema_file, root_tag, max_depth)
    if not validator(root):
        check_depth(root, max_depth)
        raise schema_rejection(validator.error_log, root, header_el, doc)
    if walk is None or (walk and next(root.iter(*walk), None) is not None):
        check_depth(root, max_depth)
    enveloped = header_el is not None
    fast = _FAST.get(spec.message_id)
    counts: tuple[str | None, str | None] | None = None
    try:
        header = readers.app_header(header_el) if header_el is not None else None
        if fast is not None:
            message, counts = fast[0](doc)
        else:
            message = spec.reader(doc)
    except AmountError as exc:
        raise MessageRejected(AM12, exc.detail, msg_id=_peek_id(header_el, doc)) from None
    except ValueError as exc:
        raise MessageRejected(
            DT01, f"invalid date or time: {exc}"[:300], msg_id=_peek_id(header_el, doc)
        ) from None
    if fast is not None:
        fast[1](
            header,
            message,
            doc,
            enveloped,
            _rule_limits(cfg),
            now or datetime.now(UTC),
            seen,
            counts,
        )
    else:
        check(
            header,
            message,
            doc,
            enveloped=enveloped,
            limits=_rule_limits(cfg),
            now=now or datetime.now(UTC),
            seen=seen,
        )
    return _new_parsed(header, message, cert_pem is not None)


_FROM_BIC = tuple(f"{{{HEAD_NS}}}{name}" for name in ("Fr", "FIId", "FinInstnId", "BICFI"))
_BIC = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")


def _sender_certificate(
    root: etree._Element,
    header_el: etree._Element | None,
    doc: etree._Element,
    certificate_of: Callable[[str], str | bytes | None],
    max_depth: int,
) -> str | bytes:
    """The pinned certificate of the sender the header names (AppHdr/Fr/FIId/FinInstnId/
    BICFI), read before the schema has checked anything: one first-child look-up per level
    (work bounded by the header's size, already limited), and a BIC's shape required before
    anyone is asked about it. No sender, or one without a certificate: DS0B."""
    node = header_el
    for tag in _FROM_BIC:
        node = node.find(tag) if node is not None else None
    sender = (node.text or "") if node is not None else ""
    if header_el is None or not _BIC.fullmatch(sender):
        check_depth(root, max_depth)
        what = "a bare Document" if header_el is None else "an envelope whose header"
        raise SignatureInvalid(
            f"{what} names no sender BIC (AppHdr/Fr/FIId/FinInstnId/BICFI): nothing to verify",
            msg_id=_peek_id(header_el, doc),
        )
    cert_pem = certificate_of(sender)
    if cert_pem is None:
        check_depth(root, max_depth)
        raise SignatureInvalid(
            f"sender {sender} is not registered with a certificate",
            msg_id=_peek_id(header_el, doc),
        )
    return cert_pem


def _authenticate(
    root: etree._Element,
    header_el: etree._Element | None,
    doc: etree._Element,
    cert_pem: str | bytes,
    max_depth: int,
) -> None:
    """The envelope's signature against ``cert_pem``, before its content is looked at: an
    unsigned or wrongly signed message is refused DS0B (or FF01 when nested too deep, a
    limit like size), never with the codes its content would earn."""
    from gateway.iso20022.signing import verify_tree

    try:
        verify_tree(root, cert_pem)
    except SignatureInvalid as exc:  # the message's id, looked up only for a refusal
        check_depth(root, max_depth)
        raise SignatureInvalid(exc.detail, msg_id=_peek_id(header_el, doc)) from None


def _spec_of(
    tag: Any, xpath: str, root: etree._Element | None = None, max_depth: int = 0
) -> MessageSpec:
    spec = BY_DOCUMENT_TAG.get(tag) if isinstance(tag, str) else None
    if spec is None:
        if root is not None:
            check_depth(root, max_depth)
        other = _other_version(tag)
        detail = (
            f"{other[0]} is not accepted: the gateway takes {other[1]} (the CBPR+ version it "
            "follows; see iso20022_schemas/README.md)"
            if other is not None
            else f"unknown message type, version or namespace: {tag}"
        )
        raise MessageRejected(FF01, detail[:300], xpath=xpath)
    return spec


_VERSIONED = re.compile(r"\{urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.[0-9]{3})\.001\.([0-9]{2})\}")
_ACCEPTED = {mid[:8]: mid for mid in [*CATALOGUE, HEAD_NS.rsplit(":", 1)[-1]]}


def _other_version(tag: Any) -> tuple[str, str] | None:
    """(the message version found, the one we accept) when ``tag`` is another version of a
    message we take (e.g. pacs.009.001.10 for pacs.009.001.08), else None."""
    found = _VERSIONED.match(tag) if isinstance(tag, str) else None
    if found is None or found.group(1) not in _ACCEPTED:
        return None
    return f"{found.group(1)}.001.{found.group(2)}", _ACCEPTED[found.group(1)]


def _envelope_rejection(root: etree._Element) -> MessageRejected:
    first = root[0] if len(root) else None
    other = _other_version(first.tag) if first is not None else None
    if other is not None and len(root) == 2:
        return MessageRejected(
            FF01,
            f"{other[0]} is not accepted: the header must be {other[1]} (the CBPR+ version "
            "the gateway follows; see iso20022_schemas/README.md)",
            xpath="/BizMsg/AppHdr",
        )
    return MessageRejected(FF01, "the envelope holds one AppHdr then one Document", xpath="/BizMsg")


def _peek_id(header_el: etree._Element | None, doc: etree._Element) -> str | None:
    """The offending message's id, best effort (used only on the error path)."""
    candidates: list[Any] = []
    if header_el is not None:
        candidates.append(header_el.find("{*}BizMsgIdr"))
    candidates += [doc.find("{*}*/{*}GrpHdr/{*}MsgId"), doc.find("{*}*/{*}Assgnmt/{*}Id")]
    for el in candidates:
        if el is not None and el.text and len(el.text) <= 35:
            return str(el.text)
    return None


_INDEXED = re.compile(r"\[(\d+)\]")


def _clean_path(el: etree._Element) -> str:
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        name = etree.QName(node).localname if isinstance(node.tag, str) else "?"
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


def _node_at(root: etree._Element, path: str | None) -> etree._Element | None:
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return None
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def schema_rejection(
    log: Any,
    root: etree._Element,
    header_el: etree._Element | None,
    doc: etree._Element,
) -> MessageRejected:
    """The first schema error -> reason code + clean local-name XPath."""
    entry = log[0] if len(log) else None
    msg_id = _peek_id(header_el, doc)
    if entry is None:
        return MessageRejected(FF01, "schema validation failed", msg_id=msg_id)
    text: str = entry.message or ""
    node = _node_at(root, entry.path)
    xpath = _clean_path(node) if node is not None else (entry.path or None)
    attr = re.search(r"attribute '(\w+)'", text)
    if attr and xpath:
        xpath += f"/@{attr.group(1)}"
    local = (node is not None and etree.QName(node).localname) or ""
    code = _schema_code(entry.type_name or "", text, local, attr.group(1) if attr else None)
    return MessageRejected(code, f"schema: {text}"[:350], xpath=xpath, msg_id=msg_id)


@cache
def declared_names() -> frozenset[str]:
    """Every element name our usage guidelines declare."""
    names: set[str] = set()
    for path in SCHEMA_DIR.glob("*.xsd"):
        names.update(re.findall(r'<xs:element name="([^"]+)"', path.read_text("utf-8")))
    return frozenset(names)


def _schema_code(type_name: str, text: str, local: str, attr: str | None) -> str:
    if "Missing child element" in text or "MISSING" in type_name:
        return CH21
    if attr == "Ccy":
        return AM03
    if "not expected" in text or type_name == "SCHEMAV_ELEMENT_CONTENT":
        # An element the guideline knows, found where another was expected: the expected one
        # (compulsory) is missing. An element the guideline never admits: not admitted.
        expected = re.findall(r"\}(\w+)", text.split("Expected is", 1)[-1])
        return CH21 if local in declared_names() and local not in expected else CH17
    if local.endswith("Amt") or local == "CtrlSum":
        return AM12
    if local in ("BICFI",):
        return RC01
    if local.endswith(("Dt", "DtTm", "Tm")) or local == "CreDt":
        return DT01
    return CH16


_DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"


def build(
    message: Message,
    header: AppHeader | None = None,
    *,
    validate: bool = True,
    signer: KeyPair | None = None,
) -> bytes:
    """A typed message (and optionally its header) -> XML bytes: an envelope when ``header``
    is given, else a bare Document. ``validate`` checks the output against our guideline,
    so the gateway never sends what it would itself refuse. ``signer``: sign the envelope
    (AppHdr/Sgntr), over the rendered text itself, which is canonical (see
    :mod:`gateway.iso20022.build`): no second parse, no C14N pass."""
    spec = CATALOGUE[message.MESSAGE_ID]
    doc = spec.writer(message)
    if header is None:
        if signer is not None:
            raise ValueError("only an envelope (a header and a document) can be signed")
        text = doc
        schema_file = spec.schema_file
    else:
        if header.msg_def_id != message.MESSAGE_ID:
            raise ValueError(f"header is for {header.msg_def_id}, message is {message.MESSAGE_ID}")
        head = writers.app_header_open(header)
        text = f"{writers.ENVELOPE_OPEN}{head}{writers.APPHDR_CLOSE}{doc}{writers.ENVELOPE_CLOSE}"
        schema_file = ENVELOPE_SCHEMA
    data = text.encode("utf-8")
    # Always parsed (our own text: a failure is a writer's bug), so that nothing malformed
    # leaves even unvalidated.
    root = etree.fromstring(data, _writer_parser())
    if validate:
        validator = schema(schema_file)
        if not validator(root):
            hdr = root[0] if header is not None else None
            raise schema_rejection(validator.error_log, root, hdr, root if hdr is None else root[1])
    if signer is None:
        return _DECLARATION + data
    # What the enveloped-signature transform leaves of the signed envelope: Sgntr, empty.
    unsigned = f"{writers.ENVELOPE_OPEN}{head}<Sgntr></Sgntr>{writers.APPHDR_CLOSE}{doc}"
    digest = hashlib.sha256(f"{unsigned}{writers.ENVELOPE_CLOSE}".encode()).digest()
    signature = signature_xml(digest, signer.key_pem, signer.cert_pem)
    signed = (
        f"{writers.ENVELOPE_OPEN}{head}<Sgntr>{signature}</Sgntr>{writers.APPHDR_CLOSE}"
        f"{doc}{writers.ENVELOPE_CLOSE}"
    )
    return _DECLARATION + signed.encode("utf-8")


_writer_local = threading.local()


def _writer_parser() -> etree.XMLParser:
    """A plain parser for the writers' own text (one per thread, as lxml wants)."""
    parser: etree.XMLParser | None = getattr(_writer_local, "parser", None)
    if parser is None:
        parser = _writer_local.parser = etree.XMLParser(
            resolve_entities=False, load_dtd=False, no_network=True, collect_ids=False
        )
    return parser


def header_for(
    message: Message,
    *,
    from_bic: str,
    to_bic: str,
    created: datetime | None = None,
    biz_svc: str | None = "swift.cbprplus.02",
) -> AppHeader:
    """The business application header that matches ``message`` (ids agree by construction)."""
    biz_id = message.id
    return AppHeader(
        from_bic=from_bic,
        to_bic=to_bic,
        biz_msg_id=biz_id,
        msg_def_id=message.MESSAGE_ID,
        created=created or datetime.now(UTC),
        biz_svc=biz_svc,
    )


def wrap_envelope(header: AppHeader, document: bytes) -> bytes:
    """Put an already-built Document (bytes) and ``header`` into the transport envelope."""
    doc = parse_bytes(
        document,
        max_bytes=_DEFAULT_SETTINGS.max_message_bytes,
        max_depth=_DEFAULT_SETTINGS.max_depth,
    )
    spec = _spec_of(doc.tag, "/Document")
    if header.msg_def_id != spec.message_id:
        raise ValueError(f"header is for {header.msg_def_id}, document is {spec.message_id}")
    text = (
        f"{writers.ENVELOPE_OPEN}{writers.app_header_open(header)}{writers.APPHDR_CLOSE}"
        f"{etree.tostring(doc, encoding=str)}{writers.ENVELOPE_CLOSE}"
    )
    root = etree.fromstring(text.encode("utf-8"), _writer_parser())
    validator = schema(ENVELOPE_SCHEMA)
    if not validator(root):
        raise schema_rejection(validator.error_log, root, root[0], root[1])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def build_pacs009(message: Pacs009, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_pacs002(message: Pacs002, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_pacs004(message: Pacs004, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_pacs028(message: Pacs028, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_camt056(message: Camt056, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_camt029(message: Camt029, header: AppHeader | None = None) -> bytes:
    return build(message, header)


def build_admi002(message: Admi002, header: AppHeader | None = None) -> bytes:
    return build(message, header)


# RltdRef/Ref: the CBPR+ restricted character set (FIN X), 1-35 characters.
_REFERENCE = re.compile(r"[0-9a-zA-Z/\-?:().,'+ ]{1,35}")


def admi002_for(rejection: MessageRejected, *, now: datetime | None = None) -> Admi002:
    """The admi.002 that answers a rejected message (``NONREF`` when its id was unreadable)."""
    ref = rejection.msg_id
    if not ref or not _REFERENCE.fullmatch(ref):
        ref = "NONREF"
    return Admi002(
        related_ref=ref,
        reason=rejection.code,
        rejected=now or datetime.now(UTC),
        error_location=(rejection.xpath or None) and str(rejection.xpath)[:350],
        description=rejection.detail[:350] or None,
    )


__all__ = [
    "admi002_for",
    "build",
    "build_admi002",
    "build_camt029",
    "build_camt056",
    "build_pacs002",
    "build_pacs004",
    "build_pacs009",
    "build_pacs028",
    "header_for",
    "parse",
    "schema_rejection",
    "wrap_envelope",
]
