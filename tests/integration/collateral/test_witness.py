"""The C2SP tlog-witness: it cosigns a log's checkpoints only along one append-only history,
refuses everything else with the status the specification gives and its state unchanged, and
remembers what it cosigned across a kill -9 (a real ``dt-gateway witness`` process)."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.collateral import note, tlog
from gateway.collateral.witness import (
    EVIDENCE_KEPT,
    SIZE_CONTENT_TYPE,
    Refused,
    Witness,
    WitnessState,
    origin_hash,
)
from gateway.collateral.witness_server import serving

ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000cc"
BIN = Path(sys.executable).parent / "dt-gateway"


@dataclass
class Tree:
    """A log kept in memory: its entries, every stored subtree hash, checkpoints and proofs."""

    signer: note.Signer
    entries: list[bytes] = field(default_factory=list)
    stamp: int = 1_800_000_000

    @classmethod
    def of(cls, signer: note.Signer, n: int, tag: str = "a") -> Tree:
        return cls(signer, [f"{tag}-{i}".encode() for i in range(n)])

    def fork(self, at: int, tag: str) -> Tree:
        """Another history sharing the first ``at`` entries, then its own."""
        other = Tree(self.signer, self.entries[:at])
        other.entries += [f"{tag}-{i}".encode() for i in range(at, len(self.entries))]
        return other

    def _hashes(self, size: int) -> tuple[tlog.Frontier, dict[tuple[int, int], bytes]]:
        frontier, stored = tlog.Frontier(), {}
        for entry in self.entries[:size]:
            for level, index, digest in frontier.append(tlog.leaf_hash(entry)):
                stored[level, index] = digest
        return frontier, stored

    def root(self, size: int) -> bytes:
        return self._hashes(size)[0].root()

    def note(self, size: int, signers: list[note.Signer] | None = None) -> str:
        self.stamp += 1  # every signing is a new text, as the log's timestamp line makes it
        body = note.Checkpoint(ORIGIN, size, self.root(size), (f"timestamp {self.stamp}",))
        return note.sign_note(body.body(), signers or [self.signer])

    def proof(self, old: int, size: int) -> list[bytes]:
        if old in (0, size):
            return []
        _, stored = self._hashes(size)
        return tlog.consistency_proof(old, size, lambda wanted: [stored[w] for w in wanted])

    def request(self, old: int, size: int, checkpoint: str | None = None) -> bytes:
        lines = [f"old {old}", *(base64.b64encode(h).decode() for h in self.proof(old, size))]
        return ("\n".join(lines) + "\n\n" + (checkpoint or self.note(size))).encode()


@pytest.fixture
def log_key() -> note.Signer:
    return note.Signer.generate(ORIGIN)


@pytest.fixture
def witness(tmp_path: Path, log_key: note.Signer) -> Iterator[Witness]:
    state = WitnessState(tmp_path / "witness.db")
    yield Witness(note.Cosigner.generate("witness.test/w1"), [log_key.verifier()], state)
    state.close()


def _cosigner_key(witness: Witness) -> note.Verifier:
    return note.Verifier.from_vkey(witness.vkey())


def _cosigned(witness: Witness, tree: Tree, old: int, size: int) -> tuple[str, str]:
    """Submits and returns (checkpoint note, cosignature line); fails on a refusal."""
    checkpoint = tree.note(size)
    line = witness.add_checkpoint(tree.request(old, size, checkpoint))
    return checkpoint, line


# ------------------------------------------------------------------------------ cosigning


def test_a_first_checkpoint_is_cosigned_and_remembered(
    witness: Witness, log_key: note.Signer
) -> None:
    tree = Tree.of(log_key, 5)
    checkpoint, line = _cosigned(witness, tree, 0, 5)
    assert line.startswith("\u2014 witness.test/w1 ") and line.endswith("\n")
    opened = note.open_note(checkpoint + line, [log_key.verifier(), _cosigner_key(witness)])
    assert opened.verified == [ORIGIN, "witness.test/w1"]
    state = witness.state.get(ORIGIN)
    assert state is not None and (state.size, state.root) == (5, tree.root(5))
    # The monitoring view: the log's signature the witness verified, and its own.
    assert witness.checkpoint(origin_hash(ORIGIN)) == checkpoint + line


def test_growth_proven_consistent_is_cosigned(witness: Witness, log_key: note.Signer) -> None:
    tree = Tree.of(log_key, 300)
    _cosigned(witness, tree, 0, 5)
    for old, size in [(5, 9), (9, 256), (256, 257), (257, 300)]:
        checkpoint, line = _cosigned(witness, tree, old, size)
        raw = base64.b64decode(line.split(" ")[2])
        body = checkpoint[: checkpoint.index("\n\n") + 1]
        assert note.verify_cosignature(body, raw, _cosigner_key(witness)) > 0
    state = witness.state.get(ORIGIN)
    assert state is not None and (state.size, state.root) == (300, tree.root(300))


def test_the_same_tree_signed_again_is_cosigned_again_on_its_new_text(
    witness: Witness, log_key: note.Signer
) -> None:
    tree = Tree.of(log_key, 7)
    first, first_line = _cosigned(witness, tree, 0, 7)
    again, again_line = _cosigned(witness, tree, 7, 7)  # a new timestamp line, same tree
    assert first != again
    key = _cosigner_key(witness)
    assert note.open_note(again + again_line, [key]).verified == ["witness.test/w1"]
    # A cosignature covers the whole text: the first one does not verify on the second text.
    with pytest.raises(note.NoteError):
        note.open_note(again + first_line, [key])


# ------------------------------------------------------------------------------ refusals


def _refused(witness: Witness, body: bytes) -> Refused:
    before = witness.state.get(ORIGIN)
    with pytest.raises(Refused) as caught:
        witness.add_checkpoint(body)
    assert witness.state.get(ORIGIN) == before, "a refusal changed the witness's state"
    return caught.value


@pytest.fixture
def at_nine(witness: Witness, log_key: note.Signer) -> Tree:
    """The witness has cosigned the tree of 9."""
    tree = Tree.of(log_key, 20)
    _cosigned(witness, tree, 0, 9)
    return tree


def test_a_checkpoint_smaller_than_its_last_is_refused(witness: Witness, at_nine: Tree) -> None:
    # Honest about the witness's size: a smaller tree cannot follow it (400).
    refusal = _refused(witness, b"old 9\n\n" + at_nine.note(5).encode())
    assert refusal.status == 400 and "larger than the checkpoint's 5" in refusal.reason
    # From its own old size: the witness answers with the size it holds (409).
    refusal = _refused(witness, at_nine.request(5, 5))
    assert (refusal.status, refusal.body, refusal.content_type) == (409, "9\n", SIZE_CONTENT_TYPE)


def test_a_stale_old_size_is_answered_with_the_witness_size(
    witness: Witness, at_nine: Tree
) -> None:
    refusal = _refused(witness, at_nine.request(4, 12))
    assert (refusal.status, refusal.body) == (409, "9\n")
    refusal = _refused(witness, at_nine.request(0, 12))
    assert (refusal.status, refusal.body) == (409, "9\n")


def test_a_bad_consistency_proof_is_refused_and_kept_as_evidence(
    witness: Witness, at_nine: Tree
) -> None:
    good = at_nine.proof(9, 15)
    bad = [good[0][:-1] + bytes([good[0][-1] ^ 1]), *good[1:]]
    lines = ["old 9", *(base64.b64encode(h).decode() for h in bad)]
    body = ("\n".join(lines) + "\n\n" + at_nine.note(15)).encode()
    refusal = _refused(witness, body)
    assert refusal.status == 422 and "does not verify" in refusal.reason
    # A shorter proof, and no proof at all, are refused the same way.
    short = ["old 9", *(base64.b64encode(h).decode() for h in good[:-1])]
    assert _refused(witness, ("\n".join(short) + "\n\n" + at_nine.note(15)).encode()).status == 422
    assert _refused(witness, ("old 9\n\n" + at_nine.note(15)).encode()).status == 422
    evidence = witness.state.evidence(ORIGIN)
    assert evidence[0][2] == body and len(evidence) == 3


def test_a_different_tree_of_the_same_size_is_refused(
    witness: Witness, log_key: note.Signer, at_nine: Tree
) -> None:
    split = at_nine.fork(4, "b")
    refusal = _refused(witness, split.request(9, 9))
    assert refusal.status == 422 and "the one cosigned at that size" in refusal.reason
    # ... and so is a larger tree of the other history, with its own valid proof from 9.
    assert _refused(witness, split.request(9, 12)).status == 422


def test_a_checkpoint_signed_by_an_unknown_key_is_refused(witness: Witness, at_nine: Tree) -> None:
    impostor = note.Signer.generate(ORIGIN)  # the log's name, another key
    assert _refused(witness, at_nine.request(9, 12, at_nine.note(12, [impostor]))).status == 403
    other_name = note.Signer.generate("someone.else/log")
    assert _refused(witness, at_nine.request(9, 12, at_nine.note(12, [other_name]))).status == 403


def test_a_forged_signature_by_the_log_key_is_refused(witness: Witness, at_nine: Tree) -> None:
    checkpoint = at_nine.note(12)
    text, sig = checkpoint.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1  # the key id (first 4 bytes) still names the log's key
    forged = text + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    refusal = _refused(witness, at_nine.request(9, 12, forged))
    assert refusal.status == 403 and "does not verify" in refusal.reason


def test_a_log_the_witness_does_not_follow_is_refused(witness: Witness, at_nine: Tree) -> None:
    stranger = note.Signer.generate("stranger.example/log")
    body = note.Checkpoint("stranger.example/log", 1, tlog.leaf_hash(b"x")).body()
    refusal = _refused(witness, b"old 0\n\n" + note.sign_note(body, [stranger]).encode())
    assert refusal.status == 404


def test_proofs_from_the_empty_tree_and_empty_trees_with_a_root_are_refused(
    witness: Witness, log_key: note.Signer
) -> None:
    tree = Tree.of(log_key, 8)
    proof = base64.b64encode(tree.root(4)).decode()
    assert _refused(witness, f"old 0\n{proof}\n\n{tree.note(8)}".encode()).status == 422
    body = note.Checkpoint(ORIGIN, 0, tlog.leaf_hash(b"not empty")).body()
    empty_with_root = note.sign_note(body, [log_key])
    assert _refused(witness, f"old 0\n\n{empty_with_root}".encode()).status == 422
    assert witness.state.get(ORIGIN) is None


@pytest.mark.parametrize(
    "head",
    [
        b"",  # no old line
        b"old 01",  # a leading zero
        b"old -1",
        b"old 9\nnot base64!",
        b"old 9\n" + base64.b64encode(b"short"),  # not 32 bytes
        b"old 9" + b"\n" + b"\n".join([base64.b64encode(b"\0" * 32)] * 64),  # 64 proof lines
        b"old 9\n\xff",
    ],
)
def test_malformed_requests_are_bad_requests(witness: Witness, at_nine: Tree, head: bytes) -> None:
    assert _refused(witness, head + b"\n\n" + at_nine.note(12).encode()).status == 400


def test_malformed_checkpoints_are_bad_requests(witness: Witness, at_nine: Tree) -> None:
    assert _refused(witness, b"old 9\n" + at_nine.note(12).encode()).status == 400
    assert _refused(witness, b"old 9\n\n" + ORIGIN.encode() + b"\n12\n").status == 400
    bad_body = f"{ORIGIN}\ntwelve\n{base64.b64encode(at_nine.root(12)).decode()}\n"
    signed = note.sign_note(bad_body, [at_nine.signer])
    assert _refused(witness, b"old 9\n\n" + signed.encode()).status == 400


def test_concurrent_submissions_from_one_size_cosign_exactly_one(
    witness: Witness, at_nine: Tree
) -> None:
    bodies = [at_nine.request(9, 10 + i) for i in range(8)]
    results: list[int] = []
    start = threading.Barrier(len(bodies))

    def submit(body: bytes) -> None:
        start.wait()
        try:
            witness.add_checkpoint(body)
            results.append(200)
        except Refused as refusal:
            results.append(refusal.status)

    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 7
    state = witness.state.get(ORIGIN)
    assert state is not None and state.size >= 10
    assert state.root == at_nine.root(state.size)


def test_evidence_is_kept_for_the_newest_refusals_only(
    witness: Witness, tmp_path: Path, log_key: note.Signer
) -> None:
    assert witness.state.evidence_kept == EVIDENCE_KEPT == 1000
    state = WitnessState(tmp_path / "few.db", evidence_kept=3)
    keeps_three = Witness(note.Cosigner.generate("witness.test/w3"), [log_key.verifier()], state)
    try:
        tree = Tree.of(log_key, 20)
        _cosigned(keeps_three, tree, 0, 9)
        split = tree.fork(4, "b")
        for _ in range(5):
            _refused(keeps_three, split.request(9, 9))
        assert len(state.evidence(ORIGIN)) == 3
    finally:
        state.close()


# ----------------------------------------------------------------- one history, whatever comes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.integers(0, 6),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 12), st.booleans()), max_size=12),
)
def test_a_witness_never_cosigns_two_histories(
    tmp_path_factory: pytest.TempPathFactory,
    log_key: note.Signer,
    prefix: int,
    steps: list[tuple[bool, int, bool]],
) -> None:
    """Two histories signed by one log key share ``prefix`` entries. Whatever is submitted,
    from whatever old size, the cosigned trees only grow and all lie on one history."""
    state = WitnessState(tmp_path_factory.mktemp("w") / "witness.db")
    witness = Witness(note.Cosigner.generate("witness.test/p"), [log_key.verifier()], state)
    a = Tree.of(log_key, 12)
    b = a.fork(prefix, "b")
    cosigned: list[tuple[int, bytes]] = []
    try:
        for use_b, size, honest in steps:
            tree = b if use_b else a
            last = state.get(ORIGIN)
            old = last.size if last is not None else 0
            if not honest:
                old = min(size, old + 1)
            try:
                witness.add_checkpoint(tree.request(min(old, size), size))
            except Refused:
                assert state.get(ORIGIN) == last
                continue
            now = state.get(ORIGIN)
            assert now is not None
            cosigned.append((now.size, now.root))
        sizes = [s for s, _ in cosigned]
        assert sizes == sorted(sizes)
        on_a = all(root == a.root(s) for s, root in cosigned)
        on_b = all(root == b.root(s) for s, root in cosigned)
        assert on_a or on_b
    finally:
        state.close()


# ------------------------------------------------------------------------------ over HTTP


def test_the_http_interface_answers_as_tlog_witness_says(
    witness: Witness, log_key: note.Signer
) -> None:
    tree = Tree.of(log_key, 10)
    with serving(witness) as url, httpx.Client(base_url=url, timeout=10) as client:
        monitor = f"/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint"
        assert client.get(monitor).status_code == 404  # nothing cosigned yet
        checkpoint = tree.note(6)
        ok = client.post("/add-checkpoint", content=tree.request(0, 6, checkpoint))
        assert ok.status_code == 200 and ok.text.startswith("\u2014 witness.test/w1 ")
        stale = client.post("/add-checkpoint", content=tree.request(0, 8))
        assert stale.status_code == 409 and stale.text == "6\n"
        assert stale.headers["content-type"] == SIZE_CONTENT_TYPE
        assert client.get(monitor).text == checkpoint + ok.text
        assert client.post("/add-checkpoint", content=b"old 6\n").status_code == 400
        assert client.post("/elsewhere", content=b"x").status_code == 404
        huge = client.post("/add-checkpoint", content=b"x" * (2 << 20))
        assert huge.status_code == 413
        info = client.get("/").text
        assert f"vkey {witness.vkey()}" in info and f"log {log_key.vkey()}" in info


def _start(
    data: Path, log_vkey: str, port: int = 0
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [str(BIN), "witness", "--port", str(port), "--data", str(data), "--log", log_vkey],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "the witness printed nothing"
    return proc, json.loads(line)


def test_a_witness_process_remembers_every_cosignature_it_gave_across_kill_9(
    tmp_path: Path, log_key: note.Signer
) -> None:
    """A client submits a growing log as fast as it can; the witness is killed with SIGKILL
    mid-stream. Restarted on the same data directory, it holds at least the last tree whose
    cosignature the client received (it persists before answering), with the same key."""
    tree = Tree.of(log_key, 400)
    proc, info = _start(tmp_path, log_key.vkey())
    received: list[int] = []
    stop = threading.Event()

    def client() -> None:
        size = 0
        with httpx.Client(timeout=5) as http:
            while not stop.is_set() and size < 400:
                new = size + 1
                try:
                    r = http.post(info["url"] + "/add-checkpoint", content=tree.request(size, new))
                except httpx.HTTPError:
                    return
                if r.status_code != 200:
                    return
                received.append(new)
                size = new

    sender = threading.Thread(target=client)
    sender.start()
    try:
        while len(received) < 30 and sender.is_alive():
            threading.Event().wait(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        sender.join(10)
    assert received, "no cosignature before the kill"

    again, info2 = _start(tmp_path, log_key.vkey())
    try:
        assert info2["vkey"] == info["vkey"]  # the development key was kept
        probe = httpx.post(info2["url"] + "/add-checkpoint", content=tree.request(0, 400))
        assert probe.status_code == 409
        remembered = int(probe.text)
        assert received[-1] <= remembered <= received[-1] + 1
        monitor = httpx.get(f"{info2['url']}/{origin_hash(ORIGIN)}/checkpoint").text
        opened = note.open_note(
            monitor, [log_key.verifier(), note.Verifier.from_vkey(info2["vkey"])]
        )
        assert note.Checkpoint.parse(opened.text).size == remembered
        assert len(opened.verified) == 2
        # And it carries on from there.
        ok = httpx.post(
            info2["url"] + "/add-checkpoint", content=tree.request(remembered, remembered + 5)
        )
        assert ok.status_code == 200
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(10) == 0


def test_the_witness_command_refuses_a_malformed_log_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN), "witness", "--port", "0", "--data", str(tmp_path), "--log", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "verifier key" in done.stderr


def test_a_given_key_is_used_and_no_development_key_is_made(
    tmp_path: Path, log_key: note.Signer
) -> None:
    skey = note.Signer.generate("witness.example/given").skey()
    keyfile = tmp_path / "given.key"
    keyfile.write_text(skey + "\n")
    data = tmp_path / "data"
    for key in (skey, str(keyfile)):
        proc = subprocess.Popen(
            [
                str(BIN),
                "witness",
                "--port",
                "0",
                "--data",
                str(data),
                "--key",
                key,
                "--log",
                log_key.vkey(),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert info["witness"] == "witness.example/given"
        assert note.Verifier.from_vkey(info["vkey"]).alg == note.ALG_COSIGNATURE_V1
    assert not (data / "witness.key").exists()


def test_a_witness_that_cannot_write_its_state_answers_500_and_cosigns_nothing(
    tmp_path: Path, log_key: note.Signer
) -> None:
    state = WitnessState(tmp_path / "witness.db")
    witness = Witness(note.Cosigner.generate("witness.test/w1"), [log_key.verifier()], state)
    tree = Tree.of(log_key, 3)
    with serving(witness) as url:
        state.close()  # as a disk that went away: every read and write now fails
        got = httpx.post(url + "/add-checkpoint", content=tree.request(0, 3), timeout=10)
    assert got.status_code == 500
    assert "\u2014" not in got.text
