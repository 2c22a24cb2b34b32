"""Fault injection on the messages the connector sends to networks (``POST /v1/faults``).

A rule applies to a message when its filters match (PvP id, message type, destination BIC)
and a random draw falls under its probability; ``count`` limits how many times it fires.
Kinds: ``drop`` (not delivered: the outbox retries it), ``delay`` (``delay_ms`` later),
``duplicate`` (delivered twice), ``reorder`` (held, sent after the next message), ``reject``
(the simulated network answers RJCT ``reason``), ``outage`` (the simulated network fails while
handling the message: what it did is rolled back with the delivery's transaction, or its
savepoint in a lane's batch, and the outbox delivers the message again), ``crash_after``
(SIGKILL at ``step``). Rules live in memory: a restart (after a crash) starts with none.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gateway.config import FaultSettings
from gateway.errors import InvalidInput
from gateway.faults import crash_point

log = logging.getLogger(__name__)

FaultKind = Literal["drop", "delay", "duplicate", "reorder", "reject", "outage", "crash_after"]
KINDS: frozenset[str] = frozenset(
    ("drop", "delay", "duplicate", "reorder", "reject", "outage", "crash_after")
)
CRASH_STEPS: frozenset[str] = frozenset(
    (
        "matched",  # PvP and its pacs.009 rows committed, nothing sent
        "sent_pacs009",  # a pacs.009 was delivered
        "received_acsp",  # a leg's ACSP recorded, before deciding
        "decided",  # decision + its outbox rows committed, nothing sent
        "sent_decision",  # a fulfilment or camt.056 was delivered
        "acknowledged",  # an ACSC / camt.029 recorded
    )
)


@dataclass
class FaultRule:
    kind: str
    probability: float = 1.0
    pvp_id: str | None = None
    message_type: str | None = None
    """e.g. ``pacs.009`` or ``camt.056.001.08`` (prefix match)."""
    destination_bic: str | None = None
    count: int | None = None
    """How many more times the rule fires; None: no limit."""
    delay_ms: int = 0
    reason: str = "AM04"
    step: str | None = None
    id: int = 0
    fired: int = field(default=0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """Thread-safe rule set."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rng = rng or random.Random()

    def add(self, rule: FaultRule) -> FaultRule:
        if rule.kind not in KINDS:
            raise InvalidInput(f"unknown fault kind {rule.kind!r}; one of {sorted(KINDS)}")
        if rule.kind == "crash_after" and rule.step not in CRASH_STEPS:
            raise InvalidInput(f"crash_after needs a step, one of {sorted(CRASH_STEPS)}")
        if not 0.0 <= rule.probability <= 1.0:
            raise InvalidInput("probability must be within [0, 1]")
        if rule.delay_ms < 0 or (rule.count is not None and rule.count < 1):
            raise InvalidInput("delay_ms must be >= 0 and count >= 1")
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def active(self) -> bool:
        """Whether any rule is set (spent ones included)."""
        return bool(self._rules)

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def fire(
        self,
        kind: str,
        *,
        pvp_id: str | None = None,
        message_type: str | None = None,
        destination_bic: str | None = None,
        step: str | None = None,
    ) -> FaultRule | None:
        """The first matching rule of ``kind`` that fires now (its count is consumed)."""
        if not self._rules:
            return None
        with self._lock:
            for rule in self._rules:
                if rule.kind != kind or (rule.count is not None and rule.count <= 0):
                    continue
                if rule.pvp_id is not None and rule.pvp_id != pvp_id:
                    continue
                if rule.step is not None and rule.step != step:
                    continue
                if rule.message_type is not None and not (message_type or "").startswith(
                    rule.message_type
                ):
                    continue
                if rule.destination_bic is not None and rule.destination_bic != destination_bic:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                rule.fired += 1
                return rule
        return None

    def crash_after(self, step: str, pvp_id: str | None) -> None:
        if self._rules and self.fire("crash_after", pvp_id=pvp_id, step=step) is not None:
            log.critical("fault crash_after %s (pvp %s): SIGKILL", step, pvp_id)
            os.kill(os.getpid(), signal.SIGKILL)


def fire_steps(
    faults: Faults, settings: FaultSettings, steps: Iterable[tuple[str, str | None]]
) -> None:
    """After a commit, the fault steps its work reached, in order (a crash injected at one
    finds that work durable): ``crash_after`` rules, and the process's crash point of a
    decision (``connector.decided``, from ``faults.crash_points``)."""
    for step, pvp_id in steps:
        if step == "decided":
            crash_point("connector.decided", settings)
        faults.crash_after(step, pvp_id)


__all__ = ["CRASH_STEPS", "KINDS", "FaultKind", "FaultRule", "Faults", "fire_steps"]
