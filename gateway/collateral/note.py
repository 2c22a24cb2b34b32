"""C2SP signed notes with Ed25519, the tlog-checkpoint body, and cosignature/v1.

This module is part of the public verifier that anyone may read and run on their own, so it
imports only the standard library and ``cryptography``.

A signed note is ``text`` (ending in a newline), a blank line, then one or more lines
``— <key name> base64(key id || signature)``. Invariants kept here:

- key names are non-empty, without Unicode spaces, ``+`` or control characters;
- a key is named by (name, 4-byte key id), the id being ``SHA-256(name || 0x0A || type || public
  key)[:4]`` for signature type 0x01 (Ed25519 over the text) or 0x04 (cosignature/v1: Ed25519
  over ``cosignature/v1\\ntime <t>\\n`` + text, signature prefixed by the 8-byte timestamp);
- :func:`open_note` returns only notes that verify under at least one given verifier, refuses a
  note in which a signature by a known key fails, and keeps (without trusting) the others.

Every refusal raises :class:`NoteError` with a specific message.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "Cosigner",
    "Note",
    "NoteError",
    "Signer",
    "UnverifiedNote",
    "Verifier",
    "cosign",
    "key_id",
    "open_note",
    "sign_note",
    "signature_line",
    "verify_cosignature",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_NOTE_SIZE = 1 << 20
"""Largest note accepted: room for far more than the 16 signatures the spec asks for."""
MAX_SIGNATURES = 100
MAX_TIMESTAMP = (1 << 63) - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_HEX_ID = re.compile(r"[0-9a-f]{8}")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


class NoteError(Exception):
    """A note, key, signature or checkpoint is malformed or does not verify."""


class UnverifiedNote(NoteError):
    """A well-formed note that no known key signs, or that a known key's signature fails.

    Kept apart from malformed notes because a witness answers the two differently (403, 400).
    """


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise NoteError(f"invalid key name {name!r}")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """``SHA-256(name || 0x0A || alg || public_key)[:4]``, the 4-byte id in signature lines."""
    return sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


class Signer:
    """Signs note text with Ed25519 (signature type 0x01) under ``name``."""

    alg = ALG_ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self.private_key = private_key
        self.public_key = _raw_public(private_key.public_key())
        self.key_id = key_id(name, self.public_key, self.alg)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parses ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || 32-byte seed)>``.

        The id must be that of the Ed25519 key, whatever the class (a cosigner reuses the same
        private key encoding, as the Go implementations do).
        """
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a private key is PRIVATE+KEY+<name>+<id>+<key>")
        name, hex_id, key64 = parts[2:]
        _check_name(name)
        if not _HEX_ID.fullmatch(hex_id):
            raise NoteError(f"key id {hex_id!r} is not 8 lowercase hex digits")
        key = _b64decode(key64, "private key")
        if len(key) != 33 or key[0] != ALG_ED25519:
            raise NoteError("private key is not 0x01 followed by a 32-byte Ed25519 seed")
        private_key = Ed25519PrivateKey.from_private_bytes(key[1:])
        if key_id(name, _raw_public(private_key.public_key())) != bytes.fromhex(hex_id):
            raise NoteError(f"key id {hex_id} does not match the name and key")
        return cls(name, private_key)

    def skey(self) -> str:
        """The Go/C2SP private key encoding (always the plain Ed25519 one, type 0x01)."""
        seed = self.private_key.private_bytes_raw()
        ed_id = key_id(self.name, self.public_key, ALG_ED25519)
        return f"PRIVATE+KEY+{self.name}+{ed_id.hex()}+{_b64(bytes([ALG_ED25519]) + seed)}"

    def vkey(self) -> str:
        """``<name>+<hex id>+<base64(type || public key)>``."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + self.public_key)}"

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key, self.alg)

    def sign(self, text: bytes) -> bytes:
        """The signature over the note text (without the key id)."""
        return self.private_key.sign(text)


class Cosigner(Signer):
    """A witness's cosignature/v1 signer (type 0x04): signs ``cosignature/v1``, the time, text.

    ``clock`` gives the POSIX time each signature carries.
    """

    alg = ALG_COSIGNATURE_V1

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, private_key)
        self.clock = clock

    def sign(self, text: bytes) -> bytes:
        return self.sign_at(text, int(self.clock()))

    def sign_at(self, text: bytes, timestamp: int) -> bytes:
        """``timestamp (8 bytes, big-endian) || Ed25519 signature``."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"timestamp {timestamp} is out of range")
        signature = self.private_key.sign(_cosigned_message(text, timestamp))
        return timestamp.to_bytes(8, "big") + signature


@dataclass(frozen=True)
class Verifier:
    """A trusted key: verifies Ed25519 note signatures (0x01) or cosignatures (0x04)."""

    name: str
    public_key: bytes
    alg: int = ALG_ED25519
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise NoteError(f"unsupported signature type 0x{self.alg:02x}")
        if len(self.public_key) != 32:
            raise NoteError(f"an Ed25519 public key is 32 bytes, not {len(self.public_key)}")
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key, self.alg))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parses ``<name>+<hex id>+<base64(type || public key)>`` (types 0x01 and 0x04)."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<id>+<key>")
        name, hex_id, key64 = parts
        _check_name(name)
        if not _HEX_ID.fullmatch(hex_id):
            raise NoteError(f"key id {hex_id!r} is not 8 lowercase hex digits")
        key = _b64decode(key64, "verifier key")
        if not key:
            raise NoteError("verifier key is empty")
        verifier = cls(name, key[1:], key[0])
        if verifier.key_id != bytes.fromhex(hex_id):
            raise NoteError(f"key id {hex_id} does not match the name and key")
        return verifier

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + self.public_key)}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key id) signs ``text`` under this key."""
        if self.alg == ALG_COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                return False
            text, signature = _cosigned_message(text, timestamp), signature[8:]
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


def signature_line(text: str, signer: Signer) -> str:
    """``— <name> base64(key id || signature)`` and a newline, for ``text``."""
    signature = signer.key_id + signer.sign(text.encode())
    return f"{_SIG_PREFIX}{signer.name} {_b64(signature)}\n"


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if not signers:
        raise NoteError("a note needs at least one signature")
    _check_chars(text)
    return text + "\n" + "".join(signature_line(text, s) for s in signers)


def cosign(text: str, cosigner: Cosigner, timestamp: int | None = None) -> str:
    """A cosignature/v1 line for the checkpoint ``text`` (its body, without signatures)."""
    if timestamp is None:
        return signature_line(text, cosigner)
    signature = cosigner.key_id + cosigner.sign_at(text.encode(), timestamp)
    return f"{_SIG_PREFIX}{cosigner.name} {_b64(signature)}\n"


def verify_cosignature(text: str, signature: bytes, verifier: Verifier) -> int:
    """Checks a cosignature (key id included) on ``text``; returns its timestamp."""
    if verifier.alg != ALG_COSIGNATURE_V1:
        raise NoteError(f"{verifier.name} is not a cosignature/v1 key")
    if signature[:4] != verifier.key_id:
        raise NoteError(f"signature is not by {verifier.name}+{verifier.key_id.hex()}")
    if not verifier.verify(text.encode(), signature[4:]):
        raise NoteError(f"cosignature by {verifier.name} does not verify")
    return int.from_bytes(signature[4:12], "big")


@dataclass(frozen=True)
class Note:
    """An opened note. ``text`` may be trusted only as far as the keys in ``verified`` are.

    ``signatures`` keeps every distinct signature line as (name, key id, signature without the
    id); ``verified`` names the given verifiers whose signatures verified.
    """

    text: str
    signatures: list[tuple[str, bytes, bytes]]
    verified: list[str]


def _check_chars(text: str) -> None:
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            raise NoteError(f"note has control character {c!r} at offset {i}")


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> Note:
    """Parses and verifies a signed note; see the module docstring for what is refused."""
    if len(note) > MAX_NOTE_SIZE:  # before decoding: a str is never longer than its UTF-8
        raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    try:
        data = note if isinstance(note, bytes) else note.encode()  # a str may hold surrogates
        msg = data.decode()
    except UnicodeError as exc:
        raise NoteError("note is not valid UTF-8") from exc
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    _check_chars(msg)
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("note does not end with a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    signatures: list[tuple[str, bytes, bytes]] = []
    verified: list[str] = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"signature line does not start with an em dash: {line[:40]!r}")
        name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
        _check_name(name)
        raw = _b64decode(sig64, f"signature by {name}")
        if len(raw) < 5:
            raise NoteError(f"signature by {name} is too short")
        entry = (name, raw[:4], raw[4:])
        if entry in signatures:
            continue
        signatures.append(entry)
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), raw[4:]):
            raise UnverifiedNote(f"signature by {name}+{raw[:4].hex()} does not verify")
        if name not in verified:
            verified.append(name)
    if not verified:
        raise UnverifiedNote("note has no verified signature from a known key")
    return Note(text, signatures, verified)


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: tlog-checkpoint's note text (origin, size, root, extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise NoteError("checkpoint origin is empty")
        if not 0 <= self.size < 1 << 64:
            raise NoteError(f"checkpoint size {self.size} is out of range")
        if len(self.root) != 32:
            raise NoteError(f"checkpoint root is {len(self.root)} bytes, not 32")
        for line in (self.origin, *self.extensions):
            if not line:
                raise NoteError("checkpoint extension lines must not be empty")
            if "\n" in line:
                raise NoteError("checkpoint lines must not contain a newline")
            _check_chars(line)

    def body(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parses a checkpoint body; only the canonical form :meth:`body` writes is accepted."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(f"checkpoint has {len(lines)} lines, not at least 3")
        origin, size, root64, *extensions = lines
        if not _SIZE.fullmatch(size) or int(size) >= 1 << 64:
            raise NoteError(f"checkpoint size {size[:30]!r} is not a decimal uint64")
        root = _b64decode(root64, "checkpoint root")
        if _b64(root) != root64:
            raise NoteError("checkpoint root is not canonical base64")
        return cls(origin, int(size), root, tuple(extensions))
