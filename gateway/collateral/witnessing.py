"""Having the collateral log's checkpoints cosigned by its witnesses (C2SP tlog-witness), and
what the log then serves.

The job ``collateral.witness`` (one replica at a time, under a database lease) calls
:func:`submit` a few times a second. Each call looks at the newest signed checkpoint and:

1. if it is new, or a witness that has not cosigned it is due for a retry, posts it to those
   witnesses at once (``add-checkpoint``: the size the witness last cosigned, the consistency
   proof from that size, computed from the stored subtree hashes, and the note). No database
   transaction is open meanwhile, so neither the ledger nor the integrator ever waits for a
   witness;
2. keeps every cosignature that verifies under the configured key, and stores, in one
   transaction, the cosignatures and the checkpoint to serve: the log's note with every
   cosignature on that very text appended (a cosignature/v1 covers the whole checkpoint text,
   its ``timestamp`` line included, so a cosignature of the same tree signed again a few
   seconds later would not verify against the new text and is not served with it).

A witness that answers ``409`` with its size is sent the proof from that size, once, in the same
call. One that fails (unreachable, a timeout, a refusal, an answer that does not verify) is
asked again after ``witness_retry_seconds``, twice as long after each further failure, up to
``witness_retry_max_seconds``; meanwhile the other witnesses' cosignatures are served without
its own. A ``422`` (the witness holds a tree this one does not extend) or a witness ahead of the
log is logged as an error: either is what a split view or a rewritten log looks like.

Serving (:func:`served`): the checkpoint last put to the witnesses, with its cosignatures, so
that a client never sees a newer checkpoint before its witnesses were asked; unless that is
more than ``witness_grace_seconds`` older than the newest signed checkpoint (this job is not
running), when the newest is served, bare.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import httpx

from gateway.collateral import note, tlog
from gateway.collateral.runtime import CollateralLog, PeerStatus, WitnessPeer
from gateway.collateral.store import (
    CollateralUnitOfWork,
    StoredCheckpoint,
    StoredCosignature,
)
from gateway.db import utcnow

log = logging.getLogger(__name__)

UowFactory = Callable[..., CollateralUnitOfWork]
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class Transport(Protocol):
    """Posts a body to a URL; returns (status, content type, body). Raises OSError-like
    :class:`TransportError` when no answer came."""

    def post(self, url: str, body: bytes) -> tuple[int, str, bytes]: ...


class TransportError(Exception):
    """The witness did not answer (connection refused, timeout, broken connection)."""


class HttpTransport:
    """The witnesses' client: keep-alive connections, a timeout, a few submissions at once."""

    def __init__(self, timeout: float, workers: int = 4) -> None:
        self.client = httpx.Client(
            timeout=timeout, headers={"User-Agent": "dt-gateway-collateral-log"}
        )
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="witness")

    def post(self, url: str, body: bytes) -> tuple[int, str, bytes]:
        try:
            response = self.client.post(url, content=body)
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code, response.headers.get("content-type", ""), response.content

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One witness's answer to one checkpoint: a verified cosignature, or why not."""

    peer: WitnessPeer
    cosignature: StoredCosignature | None = None
    error: str | None = None
    size: int | None = None
    """The witness's size as it told it (a 409), when it did."""
    alarming: bool = False
    """The refusal is what a split view or a rewritten log looks like (a 422, or a witness
    that holds a larger tree than the log's newest)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a call of :func:`submit` did: the checkpoint's size, who was asked, who cosigned."""

    size: int
    asked: tuple[str, ...] = ()
    cosigned: tuple[str, ...] = ()
    served_cosignatures: int = 0


def _body(note_text: str) -> str:
    """The checkpoint text of a signed note (what a cosignature signs)."""
    return note_text[: note_text.index("\n\n") + 1]


def _request(old: int, proof: Sequence[bytes], checkpoint_note: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint_note).encode()


def _proof(uow_factory: UowFactory, clog: CollateralLog, old: int, size: int) -> list[bytes]:
    if old == 0 or old == size:
        return []
    uow = uow_factory(readonly=True)
    with uow:
        return tlog.consistency_proof(
            old, size, lambda wanted: uow.collateral.hashes(clog.wallet_id, wanted)
        )


def _cosignature(peer: WitnessPeer, cp: StoredCheckpoint, answer: bytes) -> StoredCosignature:
    """The answer's cosignature by ``peer`` on ``cp``, verified; NoteError if there is none."""
    body = _body(cp.note)
    try:
        text = answer.decode()
    except UnicodeDecodeError:
        raise note.NoteError("the answer is not UTF-8") from None
    prefix = f"\u2014 {peer.verifier.name} "
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            raw = base64.b64decode(line[len(prefix) :], validate=True)
        except ValueError:
            continue
        if raw[:4] != peer.verifier.key_id:
            continue
        timestamp = note.verify_cosignature(body, raw, peer.verifier)
        return StoredCosignature(peer.id, cp.size, cp.root, body, line + "\n", timestamp, utcnow())
    raise note.NoteError(f"the answer holds no cosignature by {peer.id}")


def _ask(
    uow_factory: UowFactory,
    clog: CollateralLog,
    transport: Transport,
    peer: WitnessPeer,
    old: int,
    cp: StoredCheckpoint,
) -> Outcome:
    """Submits ``cp`` to ``peer`` from ``old``; after a 409, once more from the size it gave."""
    url = peer.url + "/add-checkpoint"
    for attempt in range(2):
        if old > cp.size:
            return Outcome(
                peer,
                error=f"the witness has cosigned a tree of {old} entries, larger than the "
                f"log's newest ({cp.size}): the log lost entries, or showed it another history",
                size=old,
                alarming=True,
            )
        body = _request(old, _proof(uow_factory, clog, old, cp.size), cp.note)
        try:
            status, content_type, answer = transport.post(url, body)
        except TransportError as exc:
            return Outcome(peer, error=f"no answer: {exc}")
        if status == 200:
            try:
                return Outcome(peer, cosignature=_cosignature(peer, cp, answer), size=cp.size)
            except note.NoteError as exc:
                return Outcome(peer, error=f"answered 200 without a valid cosignature: {exc}")
        told = answer.decode("ascii", "replace").strip()
        if status == 409 and content_type.startswith(SIZE_CONTENT_TYPE) and told.isdigit():
            if attempt == 0 and int(told) != old:
                old = int(told)
                continue
            return Outcome(peer, error=f"409: its size is {told} (sent {old})", size=int(told))
        return Outcome(peer, error=f"HTTP {status}: {told[:300]}", alarming=status == 422)
    raise AssertionError("unreachable")


def _status(clog: CollateralLog, peer: WitnessPeer) -> PeerStatus:
    return clog.peer_status.setdefault(peer.id, PeerStatus())


def _record(clog: CollateralLog, outcome: Outcome, now: float) -> None:
    status = _status(clog, outcome.peer)
    if outcome.size is not None:
        status.size = outcome.size
    if outcome.cosignature is not None:
        if status.failures:
            log.info("witness %s cosigns again", outcome.peer.id)
        status.failures, status.retry_at, status.last_error = 0, 0.0, None
        return
    settings = clog.settings
    status.failures += 1
    delay = min(
        settings.witness_retry_max_seconds,
        settings.witness_retry_seconds * 2 ** min(status.failures - 1, 30),
    )
    status.retry_at = now + delay
    if outcome.alarming:
        log.error("witness %s refused the log's checkpoint: %s", outcome.peer.id, outcome.error)
    elif status.failures == 1 or outcome.error != status.last_error:
        log.warning(
            "witness %s did not cosign (asking again in %.0f s): %s",
            outcome.peer.id,
            delay,
            outcome.error,
        )
    status.last_error = outcome.error


def submit(
    uow_factory: UowFactory,
    clog: CollateralLog,
    transport: Transport,
    clock: Callable[[], float] = time.monotonic,
    pool: ThreadPoolExecutor | None = None,
) -> Submitted:
    """Puts the newest checkpoint to the witnesses that have not cosigned it and are due, and
    stores what is to be served (module docstring)."""
    uow = uow_factory(readonly=True)
    with uow:
        cp = uow.collateral.latest_checkpoint(clog.wallet_id)
        if cp is None:
            return Submitted(size=-1)
        stored = uow.collateral.cosignatures(clog.wallet_id)
    body, now = _body(cp.note), clock()
    on_this = {wid: c for wid, c in stored.items() if c.body == body}
    due = [p for p in clog.witnesses if p.id not in on_this and _status(clog, p).retry_at <= now]
    if clog.witnessed == cp.note and not due:
        return Submitted(size=cp.size)

    def old_size(peer: WitnessPeer) -> int:
        known = _status(clog, peer).size
        if known is None and peer.id in stored:
            known = stored[peer.id].size
        return known or 0

    def ask(peer: WitnessPeer) -> Outcome:
        return _ask(uow_factory, clog, transport, peer, old_size(peer), cp)

    if len(due) > 1 and pool is not None:
        outcomes = list(pool.map(ask, due))
    else:
        outcomes = [ask(p) for p in due]
    done = clock()
    for outcome in outcomes:
        _record(clog, outcome, done)
    fresh = [o.cosignature for o in outcomes if o.cosignature is not None]
    on_this.update((c.witness, c) for c in fresh)
    order = [p.id for p in clog.witnesses if p.id in on_this]
    served = StoredCheckpoint(
        cp.size, cp.root, cp.note + "".join(on_this[w].line for w in order), cp.signed_at
    )
    at = utcnow()
    uow = uow_factory()
    with uow:
        for c in fresh:
            uow.collateral.save_cosignature(clog.wallet_id, c)
        kept = uow.collateral.save_cosigned_checkpoint(clog.wallet_id, served, len(order), at)
        uow.commit()
    clog.witnessed = cp.note
    if kept:
        cached = clog.checkpoint
        if cached is None or cached[2] <= served.size:
            clog.checkpoint = (time.monotonic(), served.note, served.size)
    return Submitted(
        size=cp.size,
        asked=tuple(p.id for p in due),
        cosigned=tuple(c.witness for c in fresh),
        served_cosignatures=len(order),
    )


def served(uow: CollateralUnitOfWork, clog: CollateralLog) -> StoredCheckpoint | None:
    """The checkpoint to serve (module docstring), or None before the first is signed."""
    newest = uow.collateral.latest_checkpoint(clog.wallet_id)
    if newest is None or not clog.witnesses:
        return newest
    witnessed = uow.collateral.cosigned_checkpoint(clog.wallet_id)
    if witnessed is None or witnessed.size > newest.size:
        return newest
    behind = (newest.signed_at - witnessed.signed_at).total_seconds()
    return newest if behind > clog.settings.witness_grace_seconds else witnessed


def cosigners(cp: StoredCheckpoint, clog: CollateralLog) -> list[tuple[str, int]]:
    """The configured witnesses whose cosignature on ``cp`` verifies, with its timestamp."""
    body, found = _body(cp.note), []
    for line in cp.note[len(body) + 1 :].splitlines():
        name, _, sig64 = line.removeprefix("\u2014 ").partition(" ")
        for peer in clog.witnesses:
            if peer.verifier.name != name:
                continue
            try:
                raw = base64.b64decode(sig64, validate=True)
                found.append((peer.id, note.verify_cosignature(body, raw, peer.verifier)))
            except (ValueError, note.NoteError):
                continue
    return found


__all__ = [
    "HttpTransport",
    "Outcome",
    "Submitted",
    "Transport",
    "TransportError",
    "cosigners",
    "served",
    "submit",
]
