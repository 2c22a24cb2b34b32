"""What the PvP use cases need besides the unit of work: the gateway's identity, the connector's
address and the timings, built once from the settings. Configuration only: a use case returns
what it produced, and the caller (``gateway.pvp.runtime``) decides what happens next."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import FaultSettings, Iso20022Settings
from gateway.ids import sortable_id
from gateway.iso20022 import KeyPair

PACS009 = "pacs.009.001.08"
DT_CURRENCY = "KZT"
ISO_TOPIC = "pvp.iso20022"
"""Outbox topic of the signed ISO 20022 messages the gateway sends the connector."""
INSTRUCTION_TOPIC = "pvp.instruction"
"""Outbox topic of the participants' JSON instructions."""


@dataclass(frozen=True)
class PvPContext:
    gateway_bic: str
    connector_bic: str
    connector_url: str
    connector_cert_pem: str | None
    signer: Callable[[], KeyPair]
    """The gateway's signing key (loaded on first use)."""
    iso: Iso20022Settings = field(default_factory=Iso20022Settings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    grace_seconds: float = 5.0
    status_retry_seconds: float = 5.0
    last_resort_seconds: float = 300.0
    default_deadline_seconds: float = 60.0
    safety_margin_seconds: float = 0.5
    """The connector commits only before deadline - margin (``connector.safety_margin_ms``):
    a pacs.009 whose deadline is closer than that is refused TM01, nothing locked."""
    inbox_retry_after_seconds: float = 5.0
    """How long the recovery job leaves a fresh inbox item to the worker it was handed to."""


def bic11(bic: str) -> str:
    return bic if len(bic) == 11 else bic + "XXX"


def new_msg_id() -> str:
    return sortable_id("DTGW-")


__all__ = [
    "DT_CURRENCY",
    "INSTRUCTION_TOPIC",
    "ISO_TOPIC",
    "PACS009",
    "PvPContext",
    "bic11",
    "new_msg_id",
]
