"""What the collateral services need at run time, built once: which log (its segregated
wallet), its origin line, its signing key, its witnesses, and the caches a replica keeps of
it."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gateway.collateral.note import ALG_COSIGNATURE_V1, NoteError, Signer, Verifier
from gateway.collateral.tlog import Frontier
from gateway.config import CollateralSettings, FaultSettings, Settings
from gateway.errors import InvalidInput


def origin_of(prefix: str, chain_id: int, contract: str) -> str:
    """The checkpoint origin: names the log, the chain and the contract it proves."""
    return f"{prefix.rstrip('/')}/collateral/{chain_id}/{contract.lower()}"


def _dev_key(data_dir: Path, origin: str) -> Signer:
    """The development log key, made once and kept beside the embedded database."""
    path = data_dir / ("collateral-" + origin.replace("/", "_") + ".key")
    if path.exists():
        return Signer.from_skey(path.read_text().strip())
    signer = Signer.generate(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey() + "\n")
    return signer


@dataclass(frozen=True)
class WitnessPeer:
    """A witness of the log: where to submit checkpoints, and its cosignature/v1 key."""

    url: str
    verifier: Verifier

    @property
    def id(self) -> str:
        """``<name>+<hex key id>``: names the witness in the tables and the logs."""
        return f"{self.verifier.name}+{self.verifier.key_id.hex()}"


@dataclass
class PeerStatus:
    """What this replica knows of a witness between submissions."""

    size: int | None = None
    """The size of the last checkpoint it cosigned, as far as known (None: ask the table)."""
    failures: int = 0
    """Submissions failed in a row."""
    retry_at: float = 0.0
    """Monotonic time before which it is not asked again."""
    last_error: str | None = None


def witness_peers(cs: CollateralSettings) -> tuple[WitnessPeer, ...]:
    """The configured witnesses; InvalidInput for a key that is not a cosignature/v1 vkey."""
    peers = []
    for w in cs.witnesses:
        try:
            verifier = Verifier.from_vkey(w.vkey)
        except NoteError as exc:
            raise InvalidInput(f"collateral.witnesses: {w.vkey[:80]!r}: {exc}") from None
        if verifier.alg != ALG_COSIGNATURE_V1:
            raise InvalidInput(
                f"collateral.witnesses: {verifier.name} is not a cosignature/v1 (type 0x04) key"
            )
        peers.append(WitnessPeer(w.url.rstrip("/"), verifier))
    if len({p.id for p in peers}) != len(peers):
        raise InvalidInput("collateral.witnesses: a witness key is listed twice")
    return tuple(peers)


@dataclass
class CollateralLog:
    wallet_id: str
    """The segregated DT wallet whose movements the log holds: it names the log in the tables."""
    origin: str
    signer: Signer
    settings: CollateralSettings
    faults: FaultSettings = field(default_factory=FaultSettings)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    frontier: Frontier | None = field(default=None, repr=False)
    """The tree's right edge as this replica last integrated it (reloaded when stale)."""
    checkpoint: tuple[float, str, int] | None = field(default=None, repr=False)
    """(monotonic time read, note, size) of the checkpoint this replica serves."""
    last_statement: float = 0.0
    """Monotonic time of the last reserve statement this replica pooled."""
    witnesses: tuple[WitnessPeer, ...] = ()
    """The witnesses of ``settings.witnesses`` (parsed from them when not given)."""
    peer_status: dict[str, PeerStatus] = field(default_factory=dict, repr=False)
    """By :attr:`WitnessPeer.id`: the submitting job's memory of each witness."""
    witnessed: str | None = field(default=None, repr=False)
    """The note of the checkpoint this replica last put to the witnesses."""

    def __post_init__(self) -> None:
        if not self.witnesses:
            self.witnesses = witness_peers(self.settings)

    @property
    def vkey(self) -> str:
        return self.signer.vkey()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, chain_id: int, contract: str, wallet_id: str
    ) -> CollateralLog:
        cs = settings.collateral
        origin = origin_of(cs.origin_prefix, chain_id, contract)
        if cs.log_key is not None:
            signer = Signer.from_skey(cs.log_key.get_secret_value())
            if signer.name != origin:
                raise InvalidInput(
                    f"collateral.log_key is named {signer.name!r}; the log's origin is {origin!r}"
                )
        else:
            signer = _dev_key(settings.data_dir, origin)
        return cls(
            wallet_id=wallet_id,
            origin=origin,
            signer=signer,
            settings=cs,
            faults=settings.faults,
        )


__all__ = ["CollateralLog", "PeerStatus", "WitnessPeer", "origin_of", "witness_peers"]
