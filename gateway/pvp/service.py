"""PvP use cases, one function per command, each taking the caller's unit of work; the only
place that commits PvP changes. Each returns what it produced (acknowledgements, messages
stored for processing, replies claimed for sending, legs moved), and the caller decides what
happens next (``gateway.pvp.runtime``). By responsibility:

- :mod:`gateway.pvp.reception`: check, store and (optionally) apply what the connector posts;
- :mod:`gateway.pvp.inbox`: process what was stored and not applied;
- :mod:`gateway.pvp.handlers`: one handler per inbound message type;
- :mod:`gateway.pvp.instructions`: participants' instructions, operators' decisions;
- :mod:`gateway.pvp.deadlines`: locked legs past their deadline;
- :mod:`gateway.pvp.views`: what the gateway shows of its PvPs.
"""

from __future__ import annotations

from gateway.pvp.context import INSTRUCTION_TOPIC, ISO_TOPIC, PvPContext
from gateway.pvp.deadlines import DeadlineReport, check_deadlines
from gateway.pvp.inbox import InboxItem, Processed, pending, process_items, record_failure
from gateway.pvp.instructions import (
    Actor,
    instruct,
    instruction_delivered,
    instruction_payload,
    resolve,
)
from gateway.pvp.reception import (
    Ack,
    Reception,
    receive_message,
    receive_messages,
    record_rejection,
)
from gateway.pvp.views import PvPView, alerts, view

__all__ = [
    "INSTRUCTION_TOPIC",
    "ISO_TOPIC",
    "Ack",
    "Actor",
    "DeadlineReport",
    "InboxItem",
    "Processed",
    "PvPContext",
    "PvPView",
    "Reception",
    "alerts",
    "check_deadlines",
    "instruct",
    "instruction_delivered",
    "instruction_payload",
    "pending",
    "process_items",
    "receive_message",
    "receive_messages",
    "record_failure",
    "record_rejection",
    "resolve",
    "view",
]
