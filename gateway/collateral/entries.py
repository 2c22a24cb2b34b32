"""The entries of the collateral log, and their one canonical encoding.

The gateway encodes every entry it appends with :func:`encode`; anyone checking the log decodes
it with :func:`decode`, which accepts exactly the bytes :func:`encode` would produce and nothing
else. An entry is one JSON object with its keys sorted, no whitespace (separators ``,`` and
``:``), ASCII only (other characters as ``\\uXXXX`` escapes), integers only (no fractions, no
exponents), no duplicate keys, shorter than 65,535 bytes (an entry bundle's uint16 length
prefix). Every object carries ``"v":1`` and its ``"type"``:

``dt`` (:class:`DtMovement`) — a posted movement of the segregated DT wallet:
    ``transfer_id`` the ledger transfer (or lock) id; ``op`` one of transfer, lock_commit, issue,
    redeem; ``amount`` signed tiyn (+ into the wallet, - out of it, never 0); ``balance`` the
    wallet's posted balance after it (>= 0); ``time`` RFC 3339 UTC with milliseconds and ``Z``.

``mint`` (:class:`ChainMint`) — a ``Minted`` event of the contract, appended once it is enough
confirmations deep, in chain order: ``tx_hash``, ``log_index``, ``block``, ``to``, ``amount``
(> 0), ``request_id``, ``transfer_id`` (the DT deposit of this mint when the gateway made it,
else null), ``supply`` (totalSupply after this event, counting events in chain order).

``burn`` (:class:`ChainBurn`) — a ``Redeemed`` event: ``tx_hash``, ``log_index``, ``block``,
``from``, ``amount`` (> 0), ``dt_wallet_ref`` (the event's string; any bytes of it that are not
UTF-8 read as U+FFFD), ``transfer_id`` (the DT payout
of this redemption: always ``redeem-<tx hash without 0x, lowercase>-<log index in decimal>``, see
:func:`redemption_transfer_id`), ``supply`` (after).

``statement`` (:class:`Statement`) — a reserve statement: ``block``, ``block_hash``, ``supply``
(totalSupply at that block), ``reserve`` (the wallet's posted balance at this point of the log),
``time``. A statement promises that every Minted and Redeemed event up to and including
``block`` is in the log before it.

Hashes are ``0x`` + 64 lowercase hex digits, addresses ``0x`` + 40 lowercase hex digits; amounts
are integers of tiyn (1 token unit = 1 tiyn). This module imports only the standard library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

VERSION = 1
MAX_SIZE = 65_534
"""Longest entry in bytes: shorter than 65,535, the largest uint16 length prefix."""

DT_OPS = frozenset({"transfer", "lock_commit", "issue", "redeem"})

_HASH = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


class EntryError(ValueError):
    """Bytes that are not the canonical encoding of a known entry, or an entry with a field
    out of its domain; the message names the field, what it must be and what was found."""


def redemption_transfer_id(tx_hash: str, log_index: int) -> str:
    """The DT payout transfer of the redemption ``(tx_hash, log_index)``.

    The same formula as the gateway's stablecoin service uses for the payment's ledger id, so the
    ``dt`` entry of the payout carries this ``transfer_id`` too.
    """
    return f"redeem-{tx_hash.removeprefix('0x').lower()}-{log_index}"


# ------------------------------------------------------------------------------ field checks


def _fail(name: str, must: str, value: object) -> EntryError:
    return EntryError(f"{name}: expected {must}, found {value!r}")


def _int(name: str, value: object, *, minimum: int | None = None) -> int:
    # bool is an int subclass in Python; true/false are not numbers in an entry.
    if type(value) is not int or (minimum is not None and value < minimum):
        must = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise _fail(name, must, value)
    return value


def _text(name: str, value: object) -> str:
    if type(value) is not str or not value:
        raise _fail(name, "a non-empty string", value)
    return value


def _pattern(name: str, value: object, pattern: re.Pattern[str], must: str) -> str:
    if type(value) is not str or not pattern.fullmatch(value):
        raise _fail(name, must, value)
    return value


def _hash(name: str, value: object) -> str:
    return _pattern(name, value, _HASH, '"0x" + 64 lowercase hex digits')


def _address(name: str, value: object) -> str:
    return _pattern(name, value, _ADDRESS, '"0x" + 40 lowercase hex digits')


def _time(name: str, value: object) -> str:
    must = "RFC 3339 UTC with milliseconds, e.g. 2026-01-31T23:59:59.123Z"
    text = _pattern(name, value, _TIME, must)
    try:
        datetime.fromisoformat(text[:-1])  # a real date and time, not just the digits
    except ValueError:
        raise _fail(name, must, value) from None
    return text


# ---------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class DtMovement:
    """A posted movement of the segregated DT wallet (``"type":"dt"``)."""

    TYPE: ClassVar[str] = "dt"
    transfer_id: str
    op: str
    amount: int
    balance: int
    time: str

    def __post_init__(self) -> None:
        _text("transfer_id", self.transfer_id)
        if self.op not in DT_OPS:
            raise _fail("op", "one of " + ", ".join(sorted(DT_OPS)), self.op)
        if _int("amount", self.amount) == 0:
            raise _fail("amount", "a non-zero integer", self.amount)
        _int("balance", self.balance, minimum=0)
        _time("time", self.time)


@dataclass(frozen=True)
class ChainMint:
    """A ``Minted`` event of the contract (``"type":"mint"``)."""

    TYPE: ClassVar[str] = "mint"
    tx_hash: str
    log_index: int
    block: int
    to: str
    amount: int
    request_id: str
    transfer_id: str | None
    supply: int

    def __post_init__(self) -> None:
        _hash("tx_hash", self.tx_hash)
        _int("log_index", self.log_index, minimum=0)
        _int("block", self.block, minimum=0)
        _address("to", self.to)
        _int("amount", self.amount, minimum=1)
        _hash("request_id", self.request_id)
        if self.transfer_id is not None:
            _text("transfer_id", self.transfer_id)
        _int("supply", self.supply, minimum=0)


@dataclass(frozen=True)
class ChainBurn:
    """A ``Redeemed`` event of the contract (``"type":"burn"``); ``from_`` is JSON ``"from"``."""

    TYPE: ClassVar[str] = "burn"
    tx_hash: str
    log_index: int
    block: int
    from_: str = field(metadata={"json": "from"})
    amount: int
    dt_wallet_ref: str
    transfer_id: str
    supply: int

    def __post_init__(self) -> None:
        _hash("tx_hash", self.tx_hash)
        _int("log_index", self.log_index, minimum=0)
        _int("block", self.block, minimum=0)
        _address("from", self.from_)
        _int("amount", self.amount, minimum=1)
        _text("dt_wallet_ref", self.dt_wallet_ref)
        expected = redemption_transfer_id(self.tx_hash, self.log_index)
        if self.transfer_id != expected:
            raise _fail("transfer_id", repr(expected), self.transfer_id)
        _int("supply", self.supply, minimum=0)


@dataclass(frozen=True)
class Statement:
    """A reserve statement (``"type":"statement"``): at this point of the log the wallet holds
    ``reserve``, and the contract's totalSupply at ``block`` is ``supply``; every Minted and
    Redeemed event up to and including ``block`` is in the log before it."""

    TYPE: ClassVar[str] = "statement"
    block: int
    block_hash: str
    supply: int
    reserve: int
    time: str

    def __post_init__(self) -> None:
        _int("block", self.block, minimum=0)
        _hash("block_hash", self.block_hash)
        _int("supply", self.supply, minimum=0)
        _int("reserve", self.reserve, minimum=0)
        _time("time", self.time)


Entry = DtMovement | ChainMint | ChainBurn | Statement
TYPES: dict[str, type[Entry]] = {t.TYPE: t for t in (DtMovement, ChainMint, ChainBurn, Statement)}


# ------------------------------------------------------------------------- encode / decode


_KEYS: dict[type[Entry], dict[str, str]] = {
    cls: {str(f.metadata.get("json", f.name)): f.name for f in fields(cls)}
    for cls in TYPES.values()
}
"""Per type: JSON key -> attribute (they differ only for ``from``)."""

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _canonical(obj: dict[str, object]) -> bytes:
    return _ENCODER.encode(obj).encode("ascii")


def encode(entry: Entry) -> bytes:
    """The canonical bytes of ``entry``; EntryError if they would not fit a bundle."""
    obj: dict[str, object] = {"v": VERSION, "type": entry.TYPE}
    for key, attr in _KEYS[type(entry)].items():
        obj[key] = getattr(entry, attr)
    data = _canonical(obj)
    if len(data) > MAX_SIZE:
        raise EntryError(f"entry: expected at most {MAX_SIZE} bytes, found {len(data)}")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise EntryError(f"key {key!r} appears twice")
        obj[key] = value
    return obj


def _no_float(text: str) -> object:
    raise EntryError(f"expected integers only, found the number {text}")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float
)


def decode(data: bytes) -> Entry:
    """The entry whose canonical encoding is exactly ``data``; EntryError otherwise."""
    if len(data) > MAX_SIZE:
        raise EntryError(f"entry: expected at most {MAX_SIZE} bytes, found {len(data)}")
    try:
        obj = _DECODER.decode(data.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise EntryError(f"expected ASCII only, found byte 0x{data[exc.start]:02x}") from None
    except EntryError:
        raise
    except ValueError as exc:  # json.JSONDecodeError, or an integer too long to convert
        raise EntryError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EntryError(f"expected a JSON object, found {type(obj).__name__}")
    if obj.get("v") != VERSION or type(obj.get("v")) is not int:
        raise _fail("v", str(VERSION), obj.get("v"))
    kind = obj.get("type")
    cls = TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _fail("type", "one of " + ", ".join(sorted(TYPES)), kind)
    names = _KEYS[cls]
    keys = set(obj) - {"v", "type"}
    if keys != set(names):
        missing, extra = sorted(set(names) - keys), sorted(keys - set(names))
        raise EntryError(f"{kind} entry: missing keys {missing}, unknown keys {extra}")
    entry = cls(**{attr: obj[key] for key, attr in names.items()})  # checks every field
    canonical = _canonical(obj)  # = encode(entry): the same keys and values
    if canonical != data:
        raise EntryError(f"{kind} entry is not in canonical form: expected {canonical!r}")
    return entry
