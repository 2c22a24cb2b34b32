"""Hardened XML: the only place that turns untrusted bytes into a tree, and the schema cache.

Refused before any parsing work: bodies over the size limit, DTDs and entity declarations,
non-UTF-8 (NUL bytes: UTF-16/32). The parser never loads a DTD, never expands an entity,
never touches the network and keeps libxml2's own hard limits (no ``huge_tree``). After
parsing, a document deeper than the configured limit is refused.
"""

from __future__ import annotations

import threading
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


@cache
def _depth_probe(max_depth: int) -> etree.XPath:
    # True when an element exists below max_depth levels: one compiled walk, no Python loop.
    return etree.XPath("boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")")


def parse_bytes(data: bytes, *, max_bytes: int, max_depth: int) -> etree._Element:
    """Untrusted bytes -> root element, or :class:`MessageRejected` (FF01)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageRejected(FF01, "message body must be bytes")
    if len(data) > max_bytes:
        raise MessageRejected(FF01, f"message is {len(data)} bytes, the limit is {max_bytes}")
    raw = bytes(data)
    if not raw.strip():
        raise MessageRejected(FF01, "empty message")
    if b"\x00" in raw:
        raise MessageRejected(FF01, "message must be UTF-8 (NUL byte found)")
    # The parser decodes as UTF-8 whatever the declaration says, so markup is visible as bytes.
    if b"<!" in raw and any(marker in raw for marker in _FORBIDDEN_MARKUP):
        raise MessageRejected(FF01, "DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(raw, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise MessageRejected(FF01, f"not well-formed XML: {exc}"[:300]) from None
    tree = root.getroottree()
    if _depth_probe(max_depth)(tree):
        raise MessageRejected(FF01, f"document nesting exceeds {max_depth} levels")
    return root


@cache
def schema(filename: str) -> etree.XMLSchema:
    """The compiled usage-guideline schema ``filename``; compiled once per process."""
    path = SCHEMA_DIR / filename
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
    "parse_bytes",
    "schema",
]
