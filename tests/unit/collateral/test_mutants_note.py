"""Signed notes, keys, cosignatures and checkpoints: what verifies at the exact limits, what is
refused and in which words (a witness and the verifier report them), and the cosigned message
pinned byte for byte so that other witnesses' cosignatures keep verifying.

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.collateral.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    Checkpoint,
    Cosigner,
    NoteError,
    Signer,
    UnverifiedNote,
    Verifier,
    cosign,
    open_note,
    sign_note,
    verify_cosignature,
)

DASH = "\u2014"
LOG = Signer("log.example", Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
WITNESS = Cosigner("witness.example", Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))
BODY = Checkpoint("log.example", 5, bytes(32)).body()


def _line(name: str, raw: bytes) -> str:
    return f"{DASH} {name} {base64.b64encode(raw).decode()}\n"


# --- keys ----------------------------------------------------------------------------------------


def test_a_verifier_key_whose_base64_holds_a_plus_is_read_whole() -> None:
    signer = Signer("log.example", Ed25519PrivateKey.from_private_bytes(bytes([8]) * 32))
    vkey = "log.example+3d34e96a+AROY9ixtGkV8UbpqS189vS9p/KkyFiGNyJl+QWvRfZPK"
    assert signer.vkey() == vkey
    assert Verifier.from_vkey(vkey) == signer.verifier()


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("log.example+3d34e96a", r"^a verifier key is <name>\+<id>\+<key>$"),
        ("log.example+3d34e96a+AR!Y", r"^verifier key is not valid base64$"),
        ("log.example+3d34e96a+", r"^verifier key is empty$"),
    ],
)
def test_a_malformed_verifier_key_is_refused_saying_why(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.from_vkey(vkey)


SEED = "AQcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"  # 0x01 and the seed of LOG


@pytest.mark.parametrize(
    ("skey", "message"),
    [
        (f"PRIVATE+KEY+log.example+891bac2d+{SEED}", None),
        (f"log.example+891bac2d+{SEED}", r"^a private key is PRIVATE\+KEY\+<name>\+<id>\+<key>$"),
        (f"PRIVATE+KEY+log.example+891BAC2D+{SEED}", r"^key id '891BAC2D' is not 8 lowercase hex"),
        ("PRIVATE+KEY+log.example+891bac2d+AQ!H", r"^private key is not valid base64$"),
        (
            "PRIVATE+KEY+log.example+891bac2d+AgcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH",
            r"^private key is not 0x01 followed by a 32-byte Ed25519 seed$",
        ),
        (
            f"PRIVATE+KEY+log.example+891bac2e+{SEED}",
            r"^key id 891bac2e does not match the name and key$",
        ),
    ],
)
def test_a_private_key_is_read_only_in_its_one_encoding(skey: str, message: str | None) -> None:
    if message is None:
        assert Signer.from_skey(skey).vkey() == LOG.vkey()
        assert LOG.skey() == skey
        return
    with pytest.raises(NoteError, match=message):
        Signer.from_skey(skey)


# --- notes ----------------------------------------------------------------------------------------


def test_sign_note_says_why_it_cannot_sign() -> None:
    with pytest.raises(NoteError, match=r"^note text must end with a newline$"):
        sign_note("text", [LOG])
    with pytest.raises(NoteError, match=r"^a note needs at least one signature$"):
        sign_note("text\n", [])


def test_a_note_of_exactly_the_largest_size_opens_and_one_byte_more_does_not() -> None:
    signed = sign_note("x\n", [LOG])
    text = "x" * (MAX_NOTE_SIZE - len(signed.encode()) + 1) + "\n"  # in place of "x\n"
    largest = sign_note(text, [LOG])
    assert len(largest.encode()) == MAX_NOTE_SIZE  # the em dash is 3 bytes
    assert open_note(largest, [LOG.verifier()]).text == text
    assert open_note(largest.encode(), [LOG.verifier()]).text == text
    larger = sign_note("x" + text, [LOG])
    for note in (larger, larger.encode()):
        with pytest.raises(NoteError, match=rf"^note is larger than {MAX_NOTE_SIZE} bytes$"):
            open_note(note, [LOG.verifier()])


def test_a_note_is_measured_in_utf8_bytes_not_characters() -> None:
    text = "\u00e9" * ((MAX_NOTE_SIZE - len(sign_note("x\n", [LOG]))) // 2 + 1) + "\n"
    note = sign_note(text, [LOG])
    assert len(note) < MAX_NOTE_SIZE < len(note.encode())
    with pytest.raises(NoteError, match=rf"^note is larger than {MAX_NOTE_SIZE} bytes$"):
        open_note(note, [LOG.verifier()])


def test_a_note_whose_text_is_one_empty_line_opens() -> None:
    note = sign_note("\n", [LOG])
    assert note.startswith("\n\n")
    assert open_note(note, [LOG.verifier()]).text == "\n"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"text\n\n\xff\n", r"^note is not valid UTF-8$"),
        ("text\n" + _line("log.example", bytes(8)), r"^note has no blank line before its"),
        (
            "text\n\n" + _line("log.example", bytes(8))[:-1],
            r"^note does not end with a signature line and a newline$",
        ),
        (
            "text\n\n- " + "n" * 60 + "\n",
            rf"^signature line does not start with an em dash: '- {'n' * 38}'$",
        ),
        (f"text\n\n{DASH} log.example AAAA!AAA\n", r"^signature by log.example is not valid"),
        (f"text\n\n{DASH} someone AAAAAA==\n", r"^signature by someone is too short$"),
        ("text\n\n" + _line("someone", bytes(5)), r"^note has no verified signature from a"),
    ],
)
def test_a_malformed_note_is_refused_saying_why(note: str | bytes, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(note, [LOG.verifier()])


def test_a_signature_of_five_bytes_is_kept_as_one_byte_signed_by_an_unknown_key() -> None:
    note = sign_note("text\n", [LOG]) + _line("someone", b"abcde")
    assert open_note(note, [LOG.verifier()]).signatures[1] == ("someone", b"abcd", b"e")


def test_a_note_holds_at_most_100_signature_lines() -> None:
    unknown = [_line(f"key{i}", b"abcde") for i in range(MAX_SIGNATURES - 1)]
    most = sign_note("text\n", [LOG]) + "".join(unknown)
    assert len(open_note(most, [LOG.verifier()]).signatures) == MAX_SIGNATURES
    with pytest.raises(NoteError, match=r"^note has more than 100 signatures$"):
        open_note(most + _line("one-more", b"abcde"), [LOG.verifier()])


def test_signatures_after_a_repeated_line_are_still_read() -> None:
    log_line = sign_note("text\n", [LOG]).removeprefix("text\n\n")
    note = "text\n\n" + log_line + log_line + cosign("text\n", WITNESS, timestamp=1)
    opened = open_note(note, [LOG.verifier(), WITNESS.verifier()])
    assert opened.verified == ["log.example", "witness.example"]
    assert len(opened.signatures) == 2


def test_a_failing_signature_by_a_known_key_is_named_with_its_key_id() -> None:
    note = "text\n\n" + _line("log.example", LOG.key_id + bytes(64))
    message = rf"^signature by log.example\+{LOG.key_id.hex()} does not verify$"
    with pytest.raises(UnverifiedNote, match=message):
        open_note(note, [LOG.verifier()])


def test_a_base64_signature_with_a_character_outside_the_alphabet_is_refused() -> None:
    signed = sign_note("text\n", [LOG])
    sig64 = signed.rsplit(" ", 1)[1]
    spoiled = signed.replace(sig64, sig64[:4] + "!" + sig64[4:])
    with pytest.raises(NoteError, match=r"^signature by log.example is not valid base64$"):
        open_note(spoiled, [LOG.verifier()])


# --- cosignatures --------------------------------------------------------------------------------


def test_a_cosignature_signs_the_cosignature_v1_header_the_time_and_the_text() -> None:
    signature = WITNESS.sign_at(BODY.encode(), 1679315147)
    assert signature[:8] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    WITNESS.private_key.public_key().verify(signature[8:], message)  # raises if not


def test_a_cosigner_takes_the_time_from_the_clock_it_is_given() -> None:
    witness = Cosigner(WITNESS.name, WITNESS.private_key, clock=lambda: 1_700_000_000.9)
    raw = base64.b64decode(cosign(BODY, witness).split(" ")[2])
    assert verify_cosignature(BODY, raw, witness.verifier()) == 1_700_000_000


def test_a_cosignature_time_is_from_0_to_2_to_the_63_minus_1() -> None:
    verifier = WITNESS.verifier()
    for timestamp in (0, MAX_TIMESTAMP):
        raw = WITNESS.key_id + WITNESS.sign_at(BODY.encode(), timestamp)
        assert verify_cosignature(BODY, raw, verifier) == timestamp
    for timestamp in (-1, MAX_TIMESTAMP + 1):
        with pytest.raises(NoteError, match=rf"^timestamp {timestamp} is out of range$"):
            WITNESS.sign_at(BODY.encode(), timestamp)


def test_a_cosignature_with_a_time_beyond_2_to_the_63_does_not_verify() -> None:
    beyond = MAX_TIMESTAMP + 1
    message = b"cosignature/v1\ntime %d\n" % beyond + BODY.encode()
    signature = beyond.to_bytes(8, "big") + WITNESS.private_key.sign(message)
    assert not WITNESS.verifier().verify(BODY.encode(), signature)


def test_a_signature_of_the_wrong_length_does_not_verify() -> None:
    cosignature = WITNESS.sign_at(BODY.encode(), 5)
    assert WITNESS.verifier().verify(BODY.encode(), cosignature)
    assert not WITNESS.verifier().verify(BODY.encode(), cosignature[:-1])
    signature = LOG.sign(BODY.encode())
    assert LOG.verifier().verify(BODY.encode(), signature)
    assert not LOG.verifier().verify(BODY.encode(), signature[:-1])


# --- checkpoints ---------------------------------------------------------------------------------

ROOT64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("origin", "size", "extensions", "message"),
    [
        ("", 1, (), r"^checkpoint origin is empty$"),
        ("o", 2**64, (), r"^checkpoint size 18446744073709551616 is out of range$"),
        ("o", 1, ("",), r"^checkpoint extension lines must not be empty$"),
        ("o", 1, ("a\nb",), r"^checkpoint lines must not contain a newline$"),
        ("o\nx", 1, (), r"^checkpoint lines must not contain a newline$"),
    ],
)
def test_a_checkpoint_that_cannot_be_written_says_why(
    origin: str, size: int, extensions: tuple[str, ...], message: str
) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint(origin, size, bytes(32), extensions)


def test_a_checkpoint_size_is_a_decimal_uint64() -> None:
    largest = f"o\n{2**64 - 1}\n{ROOT64}\n"
    assert Checkpoint.parse(largest).size == 2**64 - 1
    message = r"^checkpoint size '18446744073709551616' is not a decimal uint64$"
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(f"o\n{2**64}\n{ROOT64}\n")
    with pytest.raises(NoteError, match=rf"^checkpoint size '{'9' * 30}' is not a decimal"):
        Checkpoint.parse(f"o\n{'9' * 40}\n{ROOT64}\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n1\n{ROOT64}", r"^checkpoint does not end with a newline$"),
        (f"o\n1\n{ROOT64[:4]}!{ROOT64[4:]}\n", r"^checkpoint root is not valid base64$"),
        (f"o\n1\n{ROOT64[:-2]}B=\n", r"^checkpoint root is not canonical base64$"),
    ],
)
def test_a_malformed_checkpoint_says_why(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(text)
