"""The guidelines' text and time types admit exactly the CBPR+ sets, in every message.

The patterns are written for libxml2's speed (merged ranges, one class repeated, no leading
``.+``), so they no longer read like the sets they stand for; these tests pin each type to its
set, character by character, and to its lengths and shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import pytest
from lxml import etree

from gateway.iso20022 import SCHEMA_DIR
from gateway.iso20022.xmlsafe import XS_NS

FIN_X = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/-?:().,'+ ")
EXTENDED = FIN_X | frozenset('!#$%&*=^_`{|}~";<>@[\\]')
# Every code point up to U+02FF (ASCII, Latin-1, Latin Extended) and a few beyond.
CANDIDATES = [chr(c) for c in (0x9, 0xA, 0xD, *range(0x20, 0x300), 0x20AC, 0x4E2D, 0xFFFD, 0x1F600)]
GUIDELINES = sorted(p.name for p in SCHEMA_DIR.glob("*.xsd") if not p.name.startswith("dtgw."))

Admits = Callable[[str, str], bool]


@cache
def _types(file_name: str) -> Admits:
    """A schema of the file's top-level simple types, one element per type."""
    source = etree.parse(str(SCHEMA_DIR / file_name)).getroot()
    target = source.get("targetNamespace")
    schema = etree.Element(
        f"{{{XS_NS}}}schema",
        nsmap={"xs": XS_NS, None: target},
        targetNamespace=target,
        elementFormDefault="qualified",
    )
    for simple in source.iterfind(f"{{{XS_NS}}}simpleType"):
        name = simple.get("name")
        schema.append(copy.deepcopy(simple))
        etree.SubElement(schema, f"{{{XS_NS}}}element", name=name, type=name)
    validator = etree.XMLSchema(schema)

    def admits(type_name: str, text: str) -> bool:
        element = etree.Element(f"{{{target}}}{type_name}")
        element.text = text
        return bool(validator.validate(element))

    return admits


@pytest.mark.parametrize("file_name", GUIDELINES)
@pytest.mark.parametrize(
    ("type_name", "allowed"),
    [
        ("Ident35", FIN_X),
        ("FINX70", FIN_X),
        ("FINX140", FIN_X | {"\n", "\r"}),
        ("FINX350", FIN_X | {"\n", "\r"}),
        ("AccountId34", FIN_X - {"/"}),
        ("Ext16", EXTENDED),
        ("Ext320", EXTENDED),
    ],
)
def test_text_types_admit_exactly_their_character_set(
    file_name: str, type_name: str, allowed: frozenset[str]
) -> None:
    admits = _types(file_name)
    admitted = {c for c in CANDIDATES if admits(type_name, c)}
    assert admitted == {c for c in CANDIDATES if c in allowed}
    assert {c for c in CANDIDATES if admits(type_name, f"A{c}B")} == admitted | (
        {"/"} if type_name == "AccountId34" else set()
    )


@pytest.mark.parametrize("file_name", GUIDELINES)
@pytest.mark.parametrize(
    ("type_name", "longest"),
    [
        ("Ident35", 35),
        ("FINX70", 70),
        ("FINX140", 140),
        ("FINX350", 350),
        ("AccountId34", 34),
        ("Ext16", 16),
        ("Ext35", 35),
        ("Ext70", 70),
        ("Ext140", 140),
        ("Ext320", 320),
    ],
)
def test_text_types_admit_one_to_their_length(file_name: str, type_name: str, longest: int) -> None:
    admits = _types(file_name)
    assert not admits(type_name, "")
    assert admits(type_name, "A")
    assert admits(type_name, "A" * longest)
    assert not admits(type_name, "A" * (longest + 1))


@pytest.mark.parametrize("file_name", GUIDELINES)
def test_account_ids_have_no_slash_first_last_or_doubled(file_name: str) -> None:
    admits = _types(file_name)
    for ok in ("A/B", "A/B/C", "12/34 5", "A-B/C.D"):
        assert admits("AccountId34", ok), ok
    for refused in ("/", "/A", "A/", "A//B", "A/B/", "//"):
        assert not admits("AccountId34", refused), refused


@pytest.mark.parametrize("file_name", GUIDELINES)
def test_times_need_an_offset(file_name: str) -> None:
    admits = _types(file_name)
    for ok in ("12:00:00Z", "12:00:00+05:00", "23:59:59.999-12:00", "24:00:00Z", " 12:00:00Z "):
        assert admits("TimeWithOffset", ok), ok
    for refused in ("12:00:00", "12:00:00+5:00", "12:00Z", "12:00:00 Z", "T12:00:00Z"):
        assert not admits("TimeWithOffset", refused), refused
    for ok in (
        "2025-03-14T09:30:00Z",
        "2025-03-14T09:30:00+06:00",
        "2025-03-14T09:30:00.123456-05:30",
        "-2025-03-14T09:30:00Z",
        "12025-03-14T09:30:00Z",
        "\n2025-03-14T09:30:00Z ",
    ):
        assert admits("DateTimeWithOffset", ok), ok
    for refused in ("2025-03-14T09:30:00", "2025-03-14", "2025-03-14T09:30:00+0600", "2025-03-14Z"):
        assert not admits("DateTimeWithOffset", refused), refused
