"""``dt-gateway verify-collateral``: check DT Gateway's proof of collateral without trusting it.

DT Gateway issues a stablecoin (1 token = 1 tiyn of Digital Tenge) and keeps the DT behind it in
a segregated wallet. Every movement of that wallet, every Minted and Redeemed event of the
token contract and periodic reserve statements are entries of an append-only Merkle log (RFC
9162), served as C2SP tiles and signed as C2SP checkpoints. This program reads that log and your
own Ethereum node, and checks:

1. the checkpoint is signed by the log key you pinned (``--log-key``), and its origin
   ``<prefix>/collateral/<chain id>/<contract>`` names the contract and chain you expect;
2. it is fresh: its ``timestamp`` line is at most ``--max-age`` seconds old;
3. the log never lost or rewrote what you verified before (with ``--state``): it is not smaller,
   and its tree extends the one you verified last;
4. the entries hash to the signed root (so you see exactly what everyone else sees);
5. the entries add up: balances follow from amounts, the supply from mints and burns, every
   statement states the replayed reserve and supply, and the supply never exceeds the reserve;
6. what the log says about the chain is true: its mints and burns are exactly the contract's
   Minted and Redeemed events, one to one, up to the newest statement; each statement's block
   hash and totalSupply are the chain's; and the supply on chain now does not exceed the reserve;
7. the log is the one the chain anchors: every reserve attestation on chain names a tree size and
   root of the log, and the log shown here has that root and that reserve at that size;
8. with ``--witness`` (repeatable) and ``--quorum N``: at least N of those witnesses cosigned
   this very checkpoint (C2SP cosignature/v1), so it is the history they were shown too, not
   one shown to you alone (a split view).

With ``--state FILE`` the next run downloads only the new entries and starts the chain check
after the last verified statement; the file is written only when a run passes. ``--watch S``
repeats every S seconds. Each failed check exits with its own code, listed in
:mod:`gateway.collateral.verdict` and in ``--help``.

The verifier is these modules, which import only the standard library, ``cryptography`` and
``httpx`` (an import-linter contract keeps it so): ``verifier`` (this: the steps, the report),
``note`` (signed notes, checkpoints), ``tlog`` (Merkle hashing, tiles), ``entries`` (the entry
format), ``logclient`` (fetching tiles), ``replay`` (step 5), ``rpc`` and ``chaincheck`` (step 6),
``anchors`` (step 7), ``state`` (the state file), ``verdict`` (exit codes).

Run it as ``dt-gateway verify-collateral ...`` or ``python -m gateway.collateral.verifier ...``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import httpx

from gateway.collateral import note, tlog
from gateway.collateral.anchors import AnchorCheck, Anchors
from gateway.collateral.chaincheck import ChainCheck, Coverage
from gateway.collateral.entries import Statement
from gateway.collateral.logclient import WIDTH, LogClient
from gateway.collateral.rpc import Rpc, RpcError
from gateway.collateral.state import State, load, save
from gateway.collateral.verdict import ExitCode, Failure

__all__ = ["ExitCode", "Failure", "LogIdentity", "Report", "add_arguments", "main", "run"]

_CONTRACT = re.compile(r"0x[0-9a-f]{40}")
_CHAIN_ID = re.compile(r"[1-9][0-9]*")
_TIMESTAMP = re.compile(r"timestamp ([0-9]{1,19})")
MAX_FUTURE_SKEW = 60
"""Seconds a checkpoint's timestamp may be ahead of this machine's clock."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class LogIdentity:
    """What the origin ``<prefix>/collateral/<chain id>/<contract>`` says the log is about."""

    origin: str
    chain_id: int
    contract: str

    @classmethod
    def parse(cls, origin: str) -> LogIdentity:
        parts = origin.rsplit("/", 3)
        if (
            len(parts) != 4
            or not parts[0]
            or parts[1] != "collateral"
            or not _CHAIN_ID.fullmatch(parts[2])
            or not _CONTRACT.fullmatch(parts[3])
        ):
            raise ValueError(
                f"{origin!r} is not <prefix>/collateral/<chain id>/<contract, lowercase hex>"
            )
        return cls(origin, int(parts[2]), parts[3])


@dataclass(frozen=True)
class Options:
    url: str
    rpc: str
    key: note.Verifier
    log: LogIdentity
    max_age: int
    state_path: Path | None
    witnesses: tuple[note.Verifier, ...] = ()
    quorum: int = 0


@dataclass(frozen=True)
class Report:
    """What a passing run verified (amounts in tiyn)."""

    origin: str
    size: int
    root: str
    entries_checked: int
    reserve: int
    supply: int
    supply_now: int
    supply_block: int
    statement_block: int | None
    statement_reserve: int | None
    statement_supply: int | None
    chain: Coverage
    events_awaiting_statement: int
    checkpoint_timestamp: int
    checkpoint_age: int
    anchors: Anchors
    cosigned_by: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "exit": 0, **asdict(self)}

    def text(self) -> str:
        def kzt(tiyn: int) -> str:
            return f"{tiyn:,} tiyn ({tiyn // 100:,}.{tiyn % 100:02d} KZT)"

        lines = [
            f"collateral verified: {self.origin}",
            f"  log         {self.size:,} entries, {self.entries_checked:,} new checked; "
            f"checkpoint signed {self.checkpoint_age} s ago",
            f"  reserve     {kzt(self.reserve)} in the segregated wallet (after the last entry)",
            f"  supply      {kzt(self.supply_now)} on chain at block {self.supply_block}; "
            f"{kzt(self.supply)} by the log",
        ]
        if self.statement_block is None:
            lines.append("  statements  none yet: nothing checked against the chain's history")
        else:
            lines.append(
                f"  statement   newest at block {self.statement_block}: reserve "
                f"{kzt(self.statement_reserve or 0)}, supply {kzt(self.statement_supply or 0)}"
            )
        c = self.chain
        if c.first is not None:
            lines.append(
                f"  chain       blocks {c.first}..{c.last}: {c.events} Minted/Redeemed events "
                f"match the log one to one; {c.statements} statements match the chain"
                + (f" ({c.by_events_only} by events only)" if c.by_events_only else "")
            )
        a = self.anchors
        if a.checked or a.awaiting:
            newest = (
                f"; newest: size {a.newest_size:,} at block {a.newest_block}"
                if a.newest_block is not None
                else ""
            )
            later = f"; {a.awaiting} name a newer tree (checked next run)" if a.awaiting else ""
            lines.append(
                f"  anchors     {a.checked} reserve attestations on chain anchor this log "
                f"(root and reserve at their size){newest}{later}"
            )
        elif a.first is not None:
            lines.append(f"  anchors     none on chain in blocks {a.first}..{a.last}")
        if self.cosigned_by:
            lines.append(f"  witnesses   cosigned by {', '.join(self.cosigned_by)}")
        if self.events_awaiting_statement:
            lines.append(
                f"  pending     mint/burn entries after the newest statement: "
                f"{self.events_awaiting_statement} (checked once a statement covers them)"
            )
        return "\n".join(lines)


@dataclass
class Session:
    """The connections a run uses (kept between runs of ``--watch``)."""

    log: LogClient
    rpc: Rpc
    pool: ThreadPoolExecutor


# ------------------------------------------------------------------------------- the steps


def _open_checkpoint(opts: Options, session: Session) -> tuple[note.Checkpoint, int, note.Note]:
    """Step 1 and 2: the signed checkpoint of the pinned log, its timestamp, and the note."""
    raw = session.log.checkpoint()
    try:
        opened = note.open_note(raw, [opts.key])
    except note.NoteError as exc:
        raise Failure(
            ExitCode.BAD_SIGNATURE,
            f"the checkpoint is not validly signed by {opts.key.name}+{opts.key.key_id.hex()}: "
            f"{exc}",
        ) from None
    try:
        checkpoint = note.Checkpoint.parse(opened.text)
    except note.NoteError as exc:
        raise Failure(
            ExitCode.BAD_SIGNATURE, f"the signed checkpoint is malformed: {exc}"
        ) from None
    if checkpoint.origin != opts.key.name:
        raise Failure(
            ExitCode.WRONG_LOG,
            f"the checkpoint's origin is {checkpoint.origin!r}, the key's name {opts.key.name!r}",
        )
    stamps = [m for line in checkpoint.extensions if (m := _TIMESTAMP.fullmatch(line))]
    if not stamps:
        raise Failure(ExitCode.STALE, "the checkpoint has no 'timestamp <unix seconds>' line")
    return checkpoint, int(stamps[0][1]), opened


def _check_cosignatures(
    opts: Options, opened: note.Note, checkpoint: note.Checkpoint
) -> tuple[str, ...]:
    """Step 8: at least ``--quorum`` of the ``--witness`` keys cosigned this checkpoint's very
    text (a cosignature/v1 covers every line of it, the timestamp included). A cosignature
    that does not verify, or is dated in the future, counts as missing. Returns the names of
    the witnesses whose cosignature verified."""
    text, now = opened.text.encode(), int(time.time())
    cosigned: list[str] = []
    missing: list[str] = []
    for w in opts.witnesses:
        who = f"{w.name}+{w.key_id.hex()}"
        found = [sig for name, kid, sig in opened.signatures if (name, kid) == (w.name, w.key_id)]
        valid = [sig for sig in found if w.verify(text, sig)]
        if not found:
            missing.append(f"{who} (no cosignature)")
        elif not valid:
            missing.append(f"{who} (its cosignature does not verify on this checkpoint)")
        elif (stamp := int.from_bytes(valid[0][:8], "big")) > now + MAX_FUTURE_SKEW:
            missing.append(f"{who} (cosigned at {stamp}, {stamp - now} s in the future)")
        else:
            cosigned.append(w.name)
    if len(cosigned) < opts.quorum:
        raise Failure(
            ExitCode.MISSING_COSIGNATURES,
            f"the checkpoint (size {checkpoint.size}, root {_b64(checkpoint.root)}) is "
            f"cosigned by {len(cosigned)} of the {len(opts.witnesses)} witnesses given, fewer "
            f"than the quorum of {opts.quorum}; missing: {'; '.join(missing)}",
        )
    return tuple(cosigned)


def _check_history(state: State, checkpoint: note.Checkpoint) -> None:
    """Step 3: nothing verified before has disappeared or changed, as far as sizes tell."""
    if checkpoint.size < state.size:
        raise Failure(
            ExitCode.TRUNCATED,
            f"the log has {checkpoint.size} entries, fewer than the {state.size} of the last "
            f"verified checkpoint (root {_b64(state.root)})",
        )
    if checkpoint.size == state.size and checkpoint.root != state.root:
        raise Failure(
            ExitCode.REWRITTEN,
            f"the log of {state.size} entries now has root {_b64(checkpoint.root)}; the last "
            f"verified checkpoint of the same size had root {_b64(state.root)}",
        )


def _explain_mismatch(
    session: Session, state: State, checkpoint: note.Checkpoint, computed: bytes
) -> Failure:
    """Step 3/4 failed: the verified tree plus the served entries do not give the signed root.

    Either the log's tree does not extend the verified one (history rewritten), or the served
    entries are not the log's. The log's own tiles tell which: a valid consistency proof from
    them shows the tree does extend ours, and a level-0 tile then shows the first wrong entry.
    """
    log, start, end = session.log, state.size, checkpoint.size
    if start > 0:
        try:
            read = tlog.hash_reader_from_tiles(end, log.tile)
            proof = tlog.consistency_proof(start, end, read)
            tlog.verify_consistency(start, end, proof, state.root, checkpoint.root)
        except Failure as unreadable:  # not a finding about the log's history
            return Failure(
                ExitCode.ROOT_MISMATCH,
                f"entries {start}..{end - 1} and the last verified tree (size {start}) hash to "
                f"root {_b64(computed)}, the checkpoint signs {_b64(checkpoint.root)}; the "
                f"log's tiles that would tell why could not be read ({unreadable.message})",
            )
        except (ValueError, tlog.ProofError) as exc:
            return Failure(
                ExitCode.REWRITTEN,
                f"the signed tree (size {end}, root {_b64(checkpoint.root)}) does not extend "
                f"the last verified one (size {start}, root {_b64(state.root)}): the new "
                f"entries do not hash to it and the log's tiles prove no consistency ({exc})",
            )
    try:
        for n in range(start // WIDTH, (end - 1) // WIDTH + 1):
            width = None if (n + 1) * WIDTH <= end else end - n * WIDTH
            tile = log.tile(0, n, width)
            for offset, entry in enumerate(log.bundle(n, width)):
                index, leaf = n * WIDTH + offset, tlog.leaf_hash(entry)
                held = tile[offset * 32 : offset * 32 + 32]
                if index >= start and leaf != held:
                    return Failure(
                        ExitCode.ROOT_MISMATCH,
                        f"entry {index} in {tlog.tile_path('entries', n, width)} hashes to "
                        f"{leaf.hex()}, but the log's {tlog.tile_path(0, n, width)} holds "
                        f"{held.hex()}; the signed root is {_b64(checkpoint.root)}",
                    )
    except Failure:
        pass  # no tiles to point at the entry: the mismatch itself is the finding
    return Failure(
        ExitCode.ROOT_MISMATCH,
        f"entries {start}..{end - 1} hash to root {_b64(computed)}, the checkpoint signs "
        f"{_b64(checkpoint.root)}",
    )


def verify_once(opts: Options, session: Session, state: State) -> tuple[Report, State]:
    """One verification of the log against ``state``; raises :class:`Failure`. Returns the
    report and the state to keep (not written here)."""
    rpc, contract = session.rpc, opts.log.contract
    # The chain's supply is read before the checkpoint, so that the log is at least as recent.
    chain_id = rpc.chain_id()
    if chain_id != opts.log.chain_id:
        raise Failure(
            ExitCode.WRONG_LOG,
            f"the RPC endpoint serves chain {chain_id}, the log is for chain {opts.log.chain_id}",
        )
    head = rpc.block_number()
    supply_now = rpc.total_supply(contract, head)
    anchors = AnchorCheck.fetch(rpc, contract, state.anchor_block + 1, head)

    checkpoint, timestamp, opened = _open_checkpoint(opts, session)
    age = int(time.time()) - timestamp
    if age > opts.max_age:
        raise Failure(
            ExitCode.STALE,
            f"the checkpoint was signed {age} s ago (timestamp {timestamp}), more than the "
            f"allowed {opts.max_age} s",
        )
    if age < -MAX_FUTURE_SKEW:  # a note signed "in advance" would look fresh for too long
        raise Failure(
            ExitCode.STALE,
            f"the checkpoint's timestamp {timestamp} is {-age} s in the future (your clock, or "
            f"the log's, is wrong by more than {MAX_FUTURE_SKEW} s)",
        )
    _check_history(state, checkpoint)
    cosigned_by = _check_cosignatures(opts, opened, checkpoint)

    frontier, replay = state.frontier.copy(), copy.deepcopy(state.replay)
    previous = replay.last_statement[1] if replay.last_statement else None
    chain = ChainCheck(rpc, contract, previous, session.pool)
    deferred: Failure | None = None  # a replay or chain failure counts once the root matches
    anchored_sizes = anchors.wanted(state.size, checkpoint.size)
    for index, data in session.log.entries(state.size, checkpoint.size):
        frontier.append(tlog.leaf_hash(data))
        if deferred is None:
            try:
                entry = replay.apply(data)
                if isinstance(entry, Statement):
                    chain.statement(index, entry, replay.take_pending())
            except Failure as failure:
                deferred = failure
        if frontier.size in anchored_sizes:
            anchors.record(frontier.size, frontier.root(), replay.balance)
    if frontier.root() != checkpoint.root:
        raise _explain_mismatch(session, state, checkpoint, frontier.root())
    if deferred is not None:
        raise deferred
    coverage = chain.finish()
    verified = (state.size, state.root, state.replay.balance)
    anchored, anchor_block = anchors.finish(session.log, checkpoint.size, checkpoint.root, verified)
    if supply_now > replay.balance:
        raise Failure(
            ExitCode.ABOVE_RESERVE,
            f"totalSupply() at block {head} is {supply_now}, above the reserve the log shows "
            f"now ({replay.balance}, the segregated wallet's balance after entry "
            f"{checkpoint.size - 1})",
        )
    statement = replay.last_statement[1] if replay.last_statement else None
    report = Report(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=_b64(checkpoint.root),
        entries_checked=checkpoint.size - state.size,
        reserve=replay.balance,
        supply=replay.supply,
        supply_now=supply_now,
        supply_block=head,
        statement_block=statement.block if statement else None,
        statement_reserve=statement.reserve if statement else None,
        statement_supply=statement.supply if statement else None,
        chain=coverage,
        events_awaiting_statement=len(replay.pending),
        checkpoint_timestamp=timestamp,
        checkpoint_age=age,
        anchors=anchored,
        cosigned_by=cosigned_by,
    )
    return report, State(checkpoint.origin, frontier, replay, timestamp, anchor_block)


# ---------------------------------------------------------------------------------- the CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The verifier's arguments, shared by ``dt-gateway verify-collateral`` and ``-m``."""
    parser.add_argument("--url", required=True, help="the log's base URL, e.g. https://dt.example")
    parser.add_argument(
        "--rpc", required=True, metavar="RPC_URL", help="your Ethereum JSON-RPC endpoint"
    )
    parser.add_argument(
        "--log-key",
        required=True,
        metavar="VKEY",
        help="the log's verifier key, <origin>+<hex id>+<base64>, from a source you trust",
    )
    parser.add_argument(
        "--state", type=Path, metavar="FILE", help="where to keep what was verified, between runs"
    )
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    parser.add_argument(
        "--max-age", type=int, default=300, metavar="SECONDS", help="oldest checkpoint accepted"
    )
    parser.add_argument(
        "--contract", metavar="ADDRESS", help="the token contract you expect (checked if given)"
    )
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness whose cosignature you require: its cosignature/v1 key (repeatable)",
    )
    parser.add_argument(
        "--quorum",
        type=int,
        metavar="N",
        help="how many of the --witness keys must have cosigned (default: all of them)",
    )
    parser.epilog = "exit codes: " + ", ".join(f"{int(c)} {c.name}" for c in ExitCode)


def _options(args: argparse.Namespace) -> Options:
    try:
        key = note.Verifier.from_vkey(args.log_key)
    except note.NoteError as exc:
        raise Failure(ExitCode.USAGE, f"--log-key: {exc}") from None
    if key.alg != note.ALG_ED25519:
        raise Failure(ExitCode.USAGE, "--log-key: not an Ed25519 (type 0x01) note key")
    try:
        identity = LogIdentity.parse(key.name)
    except ValueError as exc:
        raise Failure(ExitCode.USAGE, f"--log-key: the key's name {exc}") from None
    if args.contract is not None and args.contract.lower() != identity.contract:
        raise Failure(
            ExitCode.WRONG_LOG,
            f"the log key is for contract {identity.contract}, not --contract {args.contract}",
        )
    if args.max_age < 0 or (args.watch is not None and args.watch <= 0):
        raise Failure(ExitCode.USAGE, "--max-age and --watch must be positive")
    witnesses, quorum = _witness_options(args)
    return Options(args.url, args.rpc, key, identity, args.max_age, args.state, witnesses, quorum)


def _witness_options(args: argparse.Namespace) -> tuple[tuple[note.Verifier, ...], int]:
    witnesses = []
    for vkey in args.witness:
        try:
            w = note.Verifier.from_vkey(vkey)
        except note.NoteError as exc:
            raise Failure(ExitCode.USAGE, f"--witness: {exc}") from None
        if w.alg != note.ALG_COSIGNATURE_V1:
            raise Failure(ExitCode.USAGE, f"--witness: {w.name} is not a cosignature/v1 key")
        if w in witnesses:
            raise Failure(ExitCode.USAGE, f"--witness: {w.name} is given twice")
        witnesses.append(w)
    quorum = len(witnesses) if args.quorum is None else args.quorum
    if not 0 <= quorum <= len(witnesses):
        raise Failure(
            ExitCode.USAGE, f"--quorum must be between 0 and the {len(witnesses)} --witness keys"
        )
    return tuple(witnesses), quorum


def _print(result: Report | Failure, as_json: bool) -> None:
    if isinstance(result, Report):
        print(json.dumps(result.to_json()) if as_json else result.text(), flush=True)
    elif as_json:
        failure = {"ok": False, "exit": int(result.code), "failure": result.code.name}
        print(json.dumps({**failure, "message": result.message}), flush=True)
    else:
        print(f"collateral NOT verified: {result}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Runs the verifier for parsed arguments; returns the exit code (of the last run)."""
    try:
        opts = _options(args)
        state = load(opts.state_path, opts.log.origin) if opts.state_path else None
    except Failure as failure:
        _print(failure, args.json)
        return int(failure.code)
    state = state or State.empty(opts.log.origin)
    headers = {"User-Agent": "dt-gateway-verifier", "Accept-Encoding": "gzip, identity"}
    with (
        httpx.Client(timeout=30, headers=headers, follow_redirects=True) as client,
        ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="verifier", initializer=_main_thread_takes_sigint
        ) as pool,
    ):
        session = Session(LogClient(opts.url, client, pool), Rpc(opts.rpc, client), pool)
        code = int(ExitCode.INTERRUPTED)
        try:
            while True:
                try:
                    report, state = verify_once(opts, session, state)
                    if opts.state_path:
                        save(opts.state_path, state)
                    result: Report | Failure = report
                except RpcError as exc:
                    result = Failure(ExitCode.UNREACHABLE, str(exc))
                except Failure as failure:
                    result = failure
                _print(result, args.json)
                code = 0 if isinstance(result, Report) else int(result.code)
                if args.watch is None:
                    return code
                time.sleep(args.watch)
        except KeyboardInterrupt:  # --watch ends here; the last result's code stands
            _exit_now(code)


def _main_thread_takes_sigint() -> None:
    """The pool's threads block SIGINT, so that the kernel delivers Ctrl-C to the main thread:
    delivered to a worker, it left the main thread blocked in a read from a stalled server
    until that read ended, and only then raised ``KeyboardInterrupt``."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _exit_now(code: int) -> NoReturn:
    """Ends the process with ``code`` at once: a fetch in flight on the pool's threads would
    hold an interrupted run (Ctrl-C) until the server answered or the HTTP timeout (30 s),
    since the interpreter joins those threads before it exits. Nothing is left half-written:
    the state file is replaced whole (``state.save``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.collateral.verifier",
        description="Check DT Gateway's proof of collateral without trusting it.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
