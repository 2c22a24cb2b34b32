"""Signed notes, verifier and signer keys, checkpoints and cosignatures (C2SP)."""

from __future__ import annotations

import base64

import pytest

from gateway.collateral.note import (
    ALG_COSIGNATURE_V1,
    MAX_SIGNATURES,
    Checkpoint,
    Cosigner,
    NoteError,
    Signer,
    Verifier,
    cosign,
    key_id,
    open_note,
    sign_note,
    verify_cosignature,
)

DASH = "\u2014"

# The example of c2sp.org/signed-note ("Verifier keys", "Example").
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_TEXT = "This is an example message.\n"
SPEC_SIG = (
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM="
)
SPEC_NOTE = f"{SPEC_TEXT}\n{DASH} example.com/foo {SPEC_SIG}\n"

# The example of the Go reference implementation (golang.org/x/mod/sumdb/note documentation):
# Ed25519 is deterministic, so the same key and text must give the same note byte for byte.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    f"{GO_TEXT}\n{DASH} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# The checkpoint body of c2sp.org/tlog-checkpoint.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def _with_signature_byte_flipped(note: str, at: int) -> str:
    text, _, line = note.rpartition(f"\n{DASH} ")
    name, sig64 = line.rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(sig64))
    raw[at] ^= 0x01
    return f"{text}\n{DASH} {name} {base64.b64encode(raw).decode()}\n"


# --- the spec's and Go's examples ----------------------------------------------------------------


def test_spec_example_note_verifies_with_its_key() -> None:
    note = open_note(SPEC_NOTE, [Verifier.from_vkey(SPEC_VKEY)])
    assert note.text == SPEC_TEXT
    assert note.verified == ["example.com/foo"]
    assert note.signatures == [
        ("example.com/foo", bytes.fromhex("530d903a"), base64.b64decode(SPEC_SIG)[4:])
    ]


def test_spec_example_note_refused_with_one_byte_of_text_changed() -> None:
    tampered = SPEC_NOTE.replace("example message.", "example message!")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [Verifier.from_vkey(SPEC_VKEY)])


def test_spec_example_note_refused_with_one_byte_of_signature_changed() -> None:
    tampered = _with_signature_byte_flipped(SPEC_NOTE, 20)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [Verifier.from_vkey(SPEC_VKEY)])


def test_spec_example_note_with_another_key_id_has_no_known_signature() -> None:
    tampered = _with_signature_byte_flipped(SPEC_NOTE, 0)
    with pytest.raises(NoteError, match="no verified signature"):
        open_note(tampered, [Verifier.from_vkey(SPEC_VKEY)])


def test_go_reference_key_signs_its_example_byte_for_byte() -> None:
    signer = Signer.from_skey(GO_SKEY)
    assert signer.skey() == GO_SKEY
    assert signer.vkey() == GO_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    assert open_note(GO_NOTE.encode(), [Verifier.from_vkey(GO_VKEY)]).verified == ["PeterNeumann"]


def test_key_id_is_the_hash_of_name_type_and_key() -> None:
    verifier = Verifier.from_vkey(SPEC_VKEY)
    assert key_id("example.com/foo", verifier.public_key) == bytes.fromhex("530d903a")
    assert verifier.key_id == bytes.fromhex("530d903a")
    assert verifier.vkey() == SPEC_VKEY


# --- keys ---------------------------------------------------------------------------------------


def test_generated_keys_round_trip_through_skey_and_vkey() -> None:
    signer = Signer.generate("dt-gateway.example/collateral")
    again = Signer.from_skey(signer.skey())
    assert again.vkey() == signer.vkey()
    assert again.key_id == signer.key_id
    verifier = Verifier.from_vkey(signer.vkey())
    assert verifier == signer.verifier()
    note = sign_note("a\n", [again])
    assert open_note(note, [verifier]).verified == [signer.name]


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("", "<name>"),
        ("example.com/foo", "<name>"),
        ("example.com/foo+530d903a", "<name>"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key name"),
        ("example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key name"),
        ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "hex"),
        ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "hex"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
        ("example.com/foo+530d903a+Aeky!Rrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "base64"),
        ("example.com/foo+530d903a+", "empty"),
        ("example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "type 0x02"),
        ("example.com/foo+530d903a+/0kyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "type 0xff"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3Q==", "32 bytes"),
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l", "does not match"),
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEYS+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD=",
        "PRIVATE+KEY+Peter Neumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_malformed_signer_keys_are_refused(skey: str) -> None:
    with pytest.raises(NoteError):
        Signer.from_skey(skey)


# --- notes --------------------------------------------------------------------------------------


def test_unknown_signers_are_kept_but_not_verified() -> None:
    log, other = Signer.generate("log.example"), Signer.generate("other.example")
    note = open_note(sign_note("body\n", [other, log]), [log.verifier()])
    assert [name for name, _, _ in note.signatures] == ["other.example", "log.example"]
    assert note.verified == ["log.example"]


def test_a_known_signer_whose_signature_fails_rejects_the_note() -> None:
    log, other = Signer.generate("log.example"), Signer.generate("other.example")
    forged_line = sign_note("other text\n", [log]).split("\n\n")[1]
    note = sign_note("body\n", [other]) + forged_line
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note, [log.verifier(), other.verifier()])


def test_a_note_without_a_known_signature_is_refused() -> None:
    signed = sign_note("body\n", [Signer.generate("a.example")])
    with pytest.raises(NoteError, match="no verified signature"):
        open_note(signed, [Signer.generate("a.example").verifier()])
    with pytest.raises(NoteError, match="no verified signature"):
        open_note(signed, [])


def test_duplicate_signature_lines_count_once() -> None:
    log = Signer.generate("log.example")
    signed = sign_note("body\n", [log])
    line = signed.split("\n\n")[1]
    note = open_note(signed + line, [log.verifier()])
    assert len(note.signatures) == 1
    assert note.verified == ["log.example"]


def test_text_may_hold_empty_lines_and_splits_at_the_last_one() -> None:
    log = Signer.generate("log.example")
    note = open_note(sign_note("a\n\nb\n", [log]), [log.verifier()])
    assert note.text == "a\n\nb\n"


MALFORMED_NOTES = {
    "no blank line": (SPEC_NOTE.replace("\n\n", "\n"), "no blank line"),
    "carriage return": (SPEC_NOTE.replace("message.\n", "message.\r\n"), "control character"),
    "tab": (SPEC_NOTE.replace("an example", "an\texample"), "control character"),
    "no final newline": (SPEC_NOTE[:-1], "does not end"),
    "no signature": (SPEC_TEXT + "\n", "does not end"),
    "no em dash": (SPEC_NOTE.replace(DASH, "-"), "em dash"),
    "empty signature": (f"{SPEC_TEXT}\n{DASH} example.com/foo \n", "too short"),
    "no signature text": (f"{SPEC_TEXT}\n{DASH} example.com/foo\n", "too short"),
    "short signature": (f"{SPEC_TEXT}\n{DASH} example.com/foo AAAAAA==\n", "too short"),
    "bad base64": (SPEC_NOTE.replace("Uw2QOkn8", "Uw2QOk!8"), "base64"),
    "empty name": (SPEC_NOTE.replace("example.com/foo ", " "), "key name"),
    "name with space": (SPEC_NOTE.replace("example.com/foo", "example.com/ foo"), "base64"),
    "name with plus": (SPEC_NOTE.replace("example.com/foo ", "example.com+foo "), "key name"),
    "lone surrogate": (SPEC_NOTE.replace("example message", "example \ud800message"), "UTF-8"),
    "oversized": (SPEC_NOTE.replace("This is", "x" * (1 << 20) + " This is"), "larger than"),
    "too many signatures": (SPEC_NOTE + f"{DASH} o {SPEC_SIG}\n" * MAX_SIGNATURES, "more than 100"),
}


@pytest.mark.parametrize(("note", "reason"), MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_notes_are_refused(note: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        open_note(note, [Verifier.from_vkey(SPEC_VKEY)])


def test_notes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(SPEC_NOTE.encode().replace(b"example message", b"example \xff message"), [])


def test_sign_note_refuses_text_without_final_newline_or_with_control_characters() -> None:
    signer = Signer.generate("log.example")
    with pytest.raises(NoteError, match="newline"):
        sign_note("body", [signer])
    with pytest.raises(NoteError, match="control"):
        sign_note("bo\x00dy\n", [signer])
    with pytest.raises(NoteError, match="at least one"):
        sign_note("body\n", [])


# --- checkpoints --------------------------------------------------------------------------------


def test_spec_checkpoint_parses_and_formats_back() -> None:
    checkpoint = Checkpoint.parse(SPEC_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.body() == SPEC_CHECKPOINT


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint("log.example", 0, bytes(32)),
        Checkpoint("log.example", 2**64 - 1, bytes(range(32)), ("ext one", "ext two")),
    ],
)
def test_checkpoints_round_trip_through_signed_notes(checkpoint: Checkpoint) -> None:
    signer = Signer.generate(checkpoint.origin)
    note = open_note(sign_note(checkpoint.body(), [signer]), [signer.verifier()])
    assert Checkpoint.parse(note.text) == checkpoint


ROOT = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
MALFORMED_CHECKPOINTS = {
    "leading zero": (f"o\n020852163\n{ROOT}\n", "size"),
    "plus sign": (f"o\n+1\n{ROOT}\n", "size"),
    "minus sign": (f"o\n-1\n{ROOT}\n", "size"),
    "space": (f"o\n 1\n{ROOT}\n", "size"),
    "empty size": (f"o\n\n{ROOT}\n", "size"),
    "not decimal": (f"o\n0x10\n{ROOT}\n", "size"),
    "unicode digits": (f"o\n\u0661\n{ROOT}\n", "size"),
    "size 2**64": (f"o\n{2**64}\n{ROOT}\n", "size"),
    "huge size": (f"o\n{'9' * 5000}\n{ROOT}\n", "size"),
    "short root": ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n", "30 bytes"),
    "long root": ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2IA\n", "33 bytes"),
    "non-canonical base64": ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", "canonical"),
    "root without padding": ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "base64"),
    "empty origin": (f"\n1\n{ROOT}\n", "origin is empty"),
    "empty extension": (f"o\n1\n{ROOT}\n\n", "must not be empty"),
    "empty extension between": (f"o\n1\n{ROOT}\na\n\nb\n", "must not be empty"),
    "no final newline": (f"o\n1\n{ROOT}", "newline"),
    "two lines": ("o\n1\n", "2 lines"),
    "control character": (f"o\r\n1\n{ROOT}\n", "control character"),
}


@pytest.mark.parametrize(
    ("text", "reason"), MALFORMED_CHECKPOINTS.values(), ids=MALFORMED_CHECKPOINTS.keys()
)
def test_malformed_checkpoints_are_refused(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, bytes(32), ()),
        ("o\nx", 1, bytes(32), ()),
        ("o", -1, bytes(32), ()),
        ("o", 2**64, bytes(32), ()),
        ("o", 1, bytes(31), ()),
        ("o", 1, bytes(32), ("",)),
        ("o", 1, bytes(32), ("a\nb",)),
    ],
)
def test_checkpoints_that_cannot_be_written_are_refused(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(NoteError):
        Checkpoint(origin, size, root, extensions)


# --- cosignatures -------------------------------------------------------------------------------


def test_cosigned_checkpoint_verifies_for_log_and_witness() -> None:
    log = Signer.generate("log.example")
    witness = Cosigner.generate("witness.example/w1")
    body = Checkpoint("log.example", 5, bytes(32)).body()
    note = sign_note(body, [log]) + cosign(body, witness, timestamp=1679315147)
    witness_key = Verifier.from_vkey(witness.vkey())
    assert witness_key.alg == ALG_COSIGNATURE_V1
    assert witness_key.key_id != key_id(witness.name, witness.public_key)
    opened = open_note(note, [log.verifier(), witness_key])
    assert opened.verified == ["log.example", "witness.example/w1"]
    _, _, signature = opened.signatures[1]
    assert verify_cosignature(body, witness_key.key_id + signature, witness_key) == 1679315147


def test_cosigner_uses_its_clock_and_reuses_the_plain_ed25519_private_key() -> None:
    witness = Cosigner.generate("witness.example/w1")
    witness.clock = lambda: 1_700_000_000.9
    again = Cosigner.from_skey(witness.skey())
    assert again.vkey() == witness.vkey()
    assert Signer.from_skey(witness.skey()).verifier().alg == 0x01
    body = "log.example\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"
    line = cosign(body, witness)
    signature = base64.b64decode(line.split(" ")[2])
    assert verify_cosignature(body, signature, witness.verifier()) == 1_700_000_000


def test_a_cosignature_with_its_timestamp_changed_is_refused() -> None:
    witness = Cosigner.generate("witness.example/w1")
    body = "log.example\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"
    signature = base64.b64decode(cosign(body, witness, timestamp=100).split(" ")[2])
    moved = signature[:4] + (101).to_bytes(8, "big") + signature[12:]
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(body, moved, witness.verifier())
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(body.replace("\n1\n", "\n2\n"), signature, witness.verifier())
    with pytest.raises(NoteError, match="not a cosignature"):
        verify_cosignature(body, signature, Signer.generate("log.example").verifier())
    with pytest.raises(NoteError, match="is not by"):
        verify_cosignature(body, signature, Cosigner.generate("witness.example/w1").verifier())


def test_a_plain_signature_does_not_pass_as_a_cosignature() -> None:
    key = Signer.generate("witness.example/w1")
    as_witness = Cosigner(key.name, key.private_key)
    body = "log.example\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"
    forged = as_witness.key_id + bytes(8) + key.sign(body.encode())
    line = f"{DASH} {key.name} {base64.b64encode(forged).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        open_note(body + "\n" + line, [as_witness.verifier()])
