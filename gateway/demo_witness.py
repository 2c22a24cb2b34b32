"""The demo's witness: a C2SP tlog-witness run in the demo's process beside the gateway, as
anyone could run ``dt-gateway witness`` beside a real one.

Its key is made first (so that the gateway's settings can name it), the witness itself once
the log's key exists (the witness follows that key)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.collateral.note import Cosigner, Verifier
from gateway.collateral.witness import Witness, WitnessState
from gateway.collateral.witness_server import STATE_FILE, load_cosigner, serving
from gateway.messaging.serving import free_port

NAME = "demo.dt-gateway.kz/witness"


@dataclass(frozen=True)
class DemoWitness:
    cosigner: Cosigner
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vkey(self) -> str:
        return self.cosigner.vkey()

    def setting(self) -> dict[str, str]:
        """Its entry in the gateway's ``collateral.witnesses``."""
        return {"url": self.url, "vkey": self.vkey}


def demo_witness(root: Path) -> DemoWitness:
    data = root / "witness"
    data.mkdir(parents=True, exist_ok=True)
    return DemoWitness(load_cosigner(None, data, NAME), data, free_port())


@contextmanager
def witness_serving(w: DemoWitness, log_key: Verifier) -> Iterator[str]:
    """The witness, following the log ``log_key``, on 127.0.0.1 while the block runs."""
    state = WitnessState(w.data / STATE_FILE)
    try:
        with serving(Witness(w.cosigner, [log_key], state), port=w.port) as url:
            yield url
    finally:
        state.close()


__all__ = ["DemoWitness", "demo_witness", "witness_serving"]
