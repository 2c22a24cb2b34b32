"""Hardened XML: the only place that turns untrusted bytes into a tree, and the schema cache.

Refused before any parsing work: bodies over the size limit, DTDs and entity declarations,
non-UTF-8 (NUL bytes: UTF-16/32). The parser never loads a DTD, never expands an entity,
never touches the network and keeps libxml2's own hard limits (no ``huge_tree``). After
parsing, a document deeper than the configured limit is refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from lxml import etree

from gateway.iso20022.errors import FF01, MessageRejected

SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parents[2] / "iso20022_schemas"

ISO_NS_PREFIX: Final[str] = "urn:iso:std:iso:20022:tech:xsd:"
HEAD_NS: Final[str] = ISO_NS_PREFIX + "head.001.001.02"
ENVELOPE_NS: Final[str] = "urn:kz:dt-gateway:xsd:envelope.001.001.01"
PVP_NS: Final[str] = "urn:kz:dt-gateway:xsd:pvp.001.001.01"
DSIG_NS: Final[str] = "http://www.w3.org/2000/09/xmldsig#"
ENVELOPE_TAG: Final[str] = f"{{{ENVELOPE_NS}}}BizMsg"
APPHDR_TAG: Final[str] = f"{{{HEAD_NS}}}AppHdr"
ENVELOPE_SCHEMA: Final[str] = "dtgw.envelope.001.001.01.xsd"

_FORBIDDEN_MARKUP: Final = (b"<!DOCTYPE", b"<!doctype", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST")

_local = threading.local()


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
        encoding="utf-8",
    )


def _parser() -> etree.XMLParser:
    # lxml parsers are not meant to be shared between threads; one per thread is cheap.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _new_parser()
    return parser


XS_NS: Final[str] = "http://www.w3.org/2001/XMLSchema"
_XS = f"{{{XS_NS}}}"


_XSD_MODELLED: Final = frozenset(
    (
        "schema",
        "import",
        "annotation",
        "documentation",
        "element",
        "complexType",
        "simpleType",
        "sequence",
        "choice",
        "any",
        "attribute",
        "simpleContent",
        "extension",
        "restriction",
        "enumeration",
        "pattern",
        "length",
        "minLength",
        "maxLength",
        "fractionDigits",
        "totalDigits",
        "minInclusive",
        "maxInclusive",
        "minExclusive",
        "maxExclusive",
        "whiteSpace",
    )
)


class _Unbounded(Exception):
    """A construct the depth walk does not model (or a recursive type): no static bound."""


@dataclass(frozen=True, slots=True)
class SchemaDepth:
    """How deep a document valid against a schema can nest.

    ``bound``: the deepest element level (the root is level 1) reachable through declared
    elements, or None when there is no static bound (recursion, constructs not modelled).
    ``open_tags``: elements whose content is a wildcard (``xs:any``): below them a valid
    document may nest freely, so a document that holds one still needs the full depth check.
    """

    bound: int | None
    open_tags: tuple[str, ...]


class _Xsd:
    """Global declarations of every XSD in SCHEMA_DIR, by (namespace, name)."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.elements: dict[tuple[str, str], tuple[etree._Element, str]] = {}
        self.complex: dict[tuple[str, str], tuple[etree._Element, str]] = {}
        self.simple: set[tuple[str, str]] = set()
        for path in sorted(SCHEMA_DIR.glob("*.xsd")):
            top = etree.parse(str(path), _new_parser()).getroot()
            tns = top.get("targetNamespace") or ""
            if top.get("elementFormDefault") != "qualified":
                raise _Unbounded(f"{path.name}: local elements not qualified")
            for node in top.iter():
                # Every construct that could add content the walk does not see (derived
                # complex types usable through xsi:type, substitution groups, groups,
                # includes) makes the bound unknown.
                if isinstance(node.tag, str) and node.tag[len(_XS) :] not in _XSD_MODELLED:
                    raise _Unbounded(f"{path.name}: {node.tag} is not modelled")
                if node.get("substitutionGroup") is not None:
                    raise _Unbounded(f"{path.name}: substitution group")
            for decl in top:
                name = decl.get("name")
                if decl.tag == _XS + "element" and name:
                    self.elements[(tns, name)] = (decl, tns)
                elif decl.tag == _XS + "complexType" and name:
                    self.complex[(tns, name)] = (decl, tns)
                elif decl.tag == _XS + "simpleType" and name:
                    self.simple.add((tns, name))

    @staticmethod
    def qname(ref: str, at: etree._Element) -> tuple[str, str]:
        prefix, _, local = ref.rpartition(":")
        ns = at.nsmap.get(prefix or None)
        if ns is None:
            raise _Unbounded(f"unresolved prefix in {ref!r}")
        return ns, local

    def element_depth(self, decl: etree._Element, tns: str, seen: frozenset[str]) -> int:
        ref = decl.get("ref")
        if ref is not None:
            decl, tns = self.elements[self.qname(ref, decl)]
        tag = f"{{{tns}}}{decl.get('name')}"
        type_ref = decl.get("type")
        if type_ref is not None:
            key = self.qname(type_ref, decl)
            if key[0] == XS_NS or key in self.simple:
                return 1
            type_decl, type_ns = self.complex[key]
            type_id = f"{{{key[0]}}}{key[1]}"
            if type_id in seen:
                raise _Unbounded(f"recursive type {type_id}")
            return 1 + self.content_depth(type_decl, type_ns, tag, seen | {type_id})
        inline = [c for c in decl if c.tag in (_XS + "complexType", _XS + "simpleType")]
        if not inline or inline[0].tag == _XS + "simpleType":
            return 1
        return 1 + self.content_depth(inline[0], tns, tag, seen)

    def content_depth(
        self, node: etree._Element, tns: str, owner: str, seen: frozenset[str]
    ) -> int:
        deepest = 0
        for part in node:
            if not isinstance(part.tag, str):
                continue
            local = part.tag[len(_XS) :] if part.tag.startswith(_XS) else part.tag
            if local in ("sequence", "choice", "all"):
                deepest = max(deepest, self.content_depth(part, tns, owner, seen))
            elif local == "element":
                deepest = max(deepest, self.element_depth(part, tns, seen))
            elif local == "any":
                self.open.add(owner)
                deepest = max(deepest, 1)
            elif local in ("simpleContent", "attribute", "annotation"):
                continue  # text and attributes only
            else:
                raise _Unbounded(f"xs:{local} is not modelled")
        return deepest


@cache
def schema_depth(filename: str, root_tag: str) -> SchemaDepth:
    """The static nesting bound of documents rooted at ``root_tag`` that are valid against
    schema ``filename`` (computed from the XSD files, once). Lets the parser skip the depth
    walk for a valid document when ``bound`` is within the limit and no wildcard is used."""
    try:
        xsd = _Xsd()
        ns, _, name = root_tag[1:].partition("}")
        decl, tns = xsd.elements[(ns, name)]
        if not (SCHEMA_DIR / filename).is_file():
            raise _Unbounded(f"unknown schema {filename}")
        bound: int | None = xsd.element_depth(decl, tns, frozenset())
    except (_Unbounded, KeyError):
        return SchemaDepth(None, ())
    return SchemaDepth(bound, tuple(sorted(xsd.open)))


@cache
def _depth_probe(max_depth: int) -> etree.XPath:
    # True when an element exists below max_depth levels: one compiled walk, no Python loop.
    return etree.XPath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")")


def parse_bytes(data: bytes, *, max_bytes: int, max_depth: int) -> etree._Element:
    """Untrusted bytes -> root element, or :class:`MessageRejected` (FF01)."""
    root = parse_shallow(data, max_bytes=max_bytes)
    check_depth(root, max_depth)
    return root


def parse_shallow(data: bytes, *, max_bytes: int) -> etree._Element:
    """:func:`parse_bytes` without the depth check: the caller must run :func:`check_depth`
    (or prove the depth bounded, see :func:`schema_depth`) before trusting the tree's shape.
    libxml2's own nesting limit (256 levels without ``huge_tree``) still applies."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageRejected(FF01, "message body must be bytes")
    if len(data) > max_bytes:
        raise MessageRejected(FF01, f"message is {len(data)} bytes, the limit is {max_bytes}")
    raw = data if type(data) is bytes else bytes(data)
    if not raw or raw.isspace():
        raise MessageRejected(FF01, "empty message")
    if b"\x00" in raw:
        raise MessageRejected(FF01, "message must be UTF-8 (NUL byte found)")
    # The parser decodes as UTF-8 whatever the declaration says, so markup is visible as bytes.
    # ("!" first: a one-byte search is a memchr, "<!" is slow on markup full of "<".)
    if b"!" in raw and b"<!" in raw and any(marker in raw for marker in _FORBIDDEN_MARKUP):
        raise MessageRejected(FF01, "DTDs and entity declarations are not accepted")
    try:
        return etree.fromstring(raw, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise MessageRejected(FF01, f"not well-formed XML: {exc}"[:300]) from None


def check_depth(root: etree._Element, max_depth: int) -> None:
    """Refuse (FF01) a document nested deeper than ``max_depth`` levels."""
    if _depth_probe(max_depth)(root.getroottree()):
        raise MessageRejected(FF01, f"document nesting exceeds {max_depth} levels")


def schema(filename: str) -> etree.XMLSchema:
    """The compiled usage-guideline schema ``filename``, for the calling thread.

    An ``XMLSchema`` keeps the error log of its last run on the object, so one shared between
    threads can report another thread's errors (or none). Each thread compiles its own copy,
    once, on first use.
    """
    compiled: dict[str, etree.XMLSchema] | None = getattr(_local, "schemas", None)
    if compiled is None:
        compiled = _local.schemas = {}
    validator = compiled.get(filename)
    if validator is None:
        validator = compiled[filename] = _compile(filename)
    return validator


def validation_plan(
    filename: str, root_tag: str, max_depth: int
) -> tuple[etree.XMLSchema, tuple[str, ...] | None]:
    """(this thread's compiled schema, depth-walk plan) for documents rooted at ``root_tag``.

    Plan: ``None`` -> after successful validation, always walk the depth; ``()`` -> never
    (the schema bounds the depth within ``max_depth``); tags -> walk only when the document
    holds one of these wildcard elements. One dictionary look-up on the hot path.
    """
    plans: dict[tuple[str, str, int], tuple[etree.XMLSchema, tuple[str, ...] | None]] | None
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    key = (filename, root_tag, max_depth)
    plan = plans.get(key)
    if plan is None:
        shape = schema_depth(filename, root_tag)
        walk = None if shape.bound is None or shape.bound > max_depth else shape.open_tags
        plan = plans[key] = (schema(filename), walk)
    return plan


_COMPILING = threading.Lock()
"""One schema compilation at a time in the process. libxml2's schema parser is not safe
against two threads compiling at once (lxml lets go of the GIL while it runs): two reception
threads compiling their first schemas together left the process unable to compile any schema
again ("xmlSchemaPValAttrNodeValue, the given type is not a built-in type"), and every
message a thread without its copy received failed from then on. A compilation happens once
per schema and thread; validating with a compiled schema stays concurrent."""


def _compile(filename: str) -> etree.XMLSchema:
    path = SCHEMA_DIR / filename
    with _COMPILING:
        # Our own files, read from disk; imports resolve to sibling files, never the network.
        doc = etree.parse(str(path), _new_parser())
        return etree.XMLSchema(doc)


__all__ = [
    "APPHDR_TAG",
    "DSIG_NS",
    "ENVELOPE_NS",
    "ENVELOPE_SCHEMA",
    "ENVELOPE_TAG",
    "HEAD_NS",
    "ISO_NS_PREFIX",
    "PVP_NS",
    "SCHEMA_DIR",
    "SchemaDepth",
    "check_depth",
    "parse_bytes",
    "parse_shallow",
    "schema",
    "schema_depth",
    "validation_plan",
]
