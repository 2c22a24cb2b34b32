"""The connector as a running party: :class:`Connector` composes the registry, matching, the
handlers, delivery, reception and the sweeper, and wires them to threads.

The path of a message, by calls:

1. ``POST /iso20022/messages`` -> a reception thread (``Batcher``) -> :meth:`Connector.
   handle_receptions` -> :meth:`Reception.receive`: verify, then in one transaction
   :meth:`Handlers.take` -> ``process`` -> ``on_pacs002`` / ``on_camt029`` / ``on_pacs028``
   / ``on_admi002`` (a decision: :meth:`Handlers.decide`, its outbox rows in the same
   transaction); the answers (202) go back;
2. :meth:`Connector.after_answers` on the same thread, once the answers are out (the
   ``Answered`` work that ``handle_receptions`` returns) -> :meth:`Delivery.committed` with the
   outbox rows those commits wrote: delivered from this thread if their lanes are idle, else
   handed to the lanes (``DeliveryEngine`` -> :meth:`Transmission.transmit`: a post, or a
   simulated bank's turn).

A trade or an instruction goes the same way on a request thread (:meth:`handle_requests`).
After a crash, :meth:`start` resumes from the database alone: unsent outbox rows are sent,
undecided PvPs past their deadline are aborted, decided ones are re-delivered.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import schema, store
from gateway.connector.delivery import Delivery
from gateway.connector.faults import Faults
from gateway.connector.handlers import Handlers
from gateway.connector.keys import load_or_create_identity
from gateway.connector.matching import Matching
from gateway.connector.outbox import Outbox, transaction
from gateway.connector.pgrepo import PgRepository
from gateway.connector.reception import Inbound, Reception
from gateway.connector.registry import Network, Registry
from gateway.connector.repository import SqlRepository
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.sweeper import Sweeper
from gateway.connector.views import pvp_view, read_messages, read_pvp
from gateway.faults import crash_point
from gateway.messaging.queues import Answered
from gateway.threads import start_thread

Unsent = list[str]
"""Message ids of outbox rows a caller's commits wrote, for it to hand out after answering."""


class Connector:
    """The SWIFT CBDC-connector mock. ``start()`` before use, ``stop()`` after."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.cfg = settings.connector
        self.bic = self.cfg.bic
        self.engine = engine or store.make_engine(self.cfg.database_url)
        self.faults = Faults()
        if self.cfg.signing_key_pem is not None and self.cfg.signing_cert_pem:
            self.key_pem = self.cfg.signing_key_pem.get_secret_value()
            self.cert_pem = self.cfg.signing_cert_pem
        else:
            self.key_pem, self.cert_pem = load_or_create_identity(
                settings.data_dir / "connector", f"connector {self.bic}"
            )
        self.sim = SimulatedNetworks(
            self.engine,
            dict(self.cfg.simulated_currencies),
            connector_bic=self.bic,
            faults=self.faults,
        )
        self.registry = Registry(self.cfg, self.engine, self.sim)
        self.outbox = Outbox(self.bic, self.registry, self.sim, self)
        repo = SqlRepository() if self.engine.dialect.name == "sqlite" else PgRepository()
        self.handlers = Handlers(settings, self.outbox, self.sim, self.faults, repo)
        self.matching = Matching(self.cfg, self.registry, self.outbox, self.handlers)
        self.delivery = Delivery(
            settings, self.engine, self.registry, self.sim, self.outbox, self.handlers, self.faults
        )
        self.reception = Reception(
            settings, self.engine, self.registry, self.handlers, self.delivery, self.faults, self
        )
        self.sweeper = Sweeper(
            settings, self.engine, self.handlers, self.delivery, self.reception, self.faults
        )
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, *, threads: bool = True) -> None:
        schema.create_schema(self.engine)
        self.sim.seed({k: dict(v) for k, v in self.cfg.sim_accounts.items()})
        if self.cfg.gateway_endpoint:
            self.registry.upsert(
                self.cfg.gateway_bic,
                "KZT",
                self.cfg.gateway_endpoint,
                self.cfg.gateway_cert_pem,
                token=None,
            )
        self.registry.load()
        self.reception.process_pending_inbox(older_than_ms=0)
        if threads:
            self._threads.append(self.delivery.start_dispatcher())
            self._threads.append(start_thread(self.sweeper.loop, "connector-sweeper"))

    def stop(self) -> None:
        self.delivery.stop()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        self.delivery.stop_lanes()

    # --- participants -----------------------------------------------------------------------

    def register_participant(self, data: Any) -> dict[str, Any]:
        return self.registry.register(data)

    def list_participants(self) -> list[dict[str, Any]]:
        return self.registry.listed()

    def authorize_admin(self, authorization: str | None) -> None:
        self.registry.authorize_admin(authorization)

    def authorize_pvp_read(self, authorization: str | None, pvp_id: str) -> None:
        self.registry.authorize_pvp_read(authorization, pvp_id)

    def authenticate(self, authorization: str | None) -> Network:
        return self.registry.authenticate(authorization)

    def network_for(self, currency: str) -> Network | None:
        return self.registry.network_for(currency)

    # --- commands that make PvPs ------------------------------------------------------------
    #
    # ``unsent``: the caller hands out what the command's commit queued, once it has answered
    # (handle_requests); without it, it is handed out at once.

    def submit_instruction(
        self, principal: Network, data: Any, unsent: Unsent | None = None
    ) -> tuple[int, dict[str, Any]]:
        row = self.matching.instruction_row(principal, data)
        with transaction(self.engine) as work:
            status, view, matched = self.matching.instruct(work, row)
        if matched is not None:
            self._matched([matched], work.sent, unsent)
        return status, view

    def create_trade(self, data: Any, unsent: Unsent | None = None) -> tuple[int, dict[str, Any]]:
        """Test shortcut: a matched trade without instructions."""
        new = self.matching.trade(data)
        with transaction(self.engine) as work:
            self.matching.insert_new(work, [new], bulk=False)
        self._matched([new.id], work.sent, unsent)
        # What was just written: no need to read it back.
        return 201, pvp_view(new.pvp, None, new.legs)

    def create_trades(self, data: Any, unsent: Unsent | None = None) -> tuple[int, dict[str, Any]]:
        """Test shortcut in bulk: ``{"trades": [<trade>, ...]}`` -> all of them in one
        transaction, or none (an invalid trade or a pvp_id that exists refuses the lot)."""
        news = self.matching.trades(data)
        with transaction(self.engine) as work:
            self.matching.insert_new(work, news, bulk=True)
        self._matched([new.id for new in news], work.sent, unsent)
        return 201, {"pvp_ids": [new.id for new in news]}

    def _matched(self, pvp_ids: list[str], sent: Unsent, unsent: Unsent | None) -> None:
        for pvp_id in pvp_ids:
            crash_point("connector.matched", self.settings.faults)
            self.faults.crash_after("matched", pvp_id)
        if unsent is None:
            self.delivery.committed(sent)
        else:
            unsent.extend(sent)

    def flush_batches(self, *, force: bool = False) -> int:
        return self.delivery.flush_batches(force=force)

    # --- reception --------------------------------------------------------------------------

    def receive_http(self, raw: bytes) -> Inbound:
        """``POST /iso20022/messages``: verify, store, acknowledge, process."""
        [inbound] = self.receive_batch([raw])
        return inbound

    def receive_batch(self, raws: list[bytes]) -> list[Inbound]:
        """Envelopes received together -> their answers; what they queued goes out now."""
        received = self.reception.receive(raws)
        if received.stored:
            self.delivery.committed(received.sent)
        return received.answers

    def handle_receptions(self, raws: list[bytes]) -> Answered[Inbound]:
        """:meth:`receive_batch` on a reception thread (``gateway.messaging.queues.
        Batcher``): the answers, and :meth:`after_answers` with what their commits queued (a
        decision, typically), for the thread to deliver once the answers are out."""
        received = self.reception.receive(raws)
        return Answered(received.answers, then=functools.partial(self.after_answers, received.sent))

    def handle_requests(self, calls: Sequence[Callable[[Unsent], Any]]) -> Answered[Any]:
        """Calls of the HTTP API that may queue outbox rows (trades, instructions), on a
        request thread (``gateway.messaging.queues.Batcher``), each given the list their
        commits' rows go to: each call's result, or the exception it raised, and
        :meth:`after_answers` with what their commits queued: a new PvP's pacs.009 then goes
        out from this thread, without waking a lane's thread for it."""
        unsent: Unsent = []
        outcomes: list[Any] = []
        for call in calls:
            try:
                outcomes.append(call(unsent))
            except Exception as exc:  # this caller's answer; the others go on
                outcomes.append(exc)
        return Answered(outcomes, then=functools.partial(self.after_answers, unsent))

    def after_answers(self, unsent: Unsent, may_wait: bool) -> None:
        """On a reception thread (:meth:`handle_receptions`) or a request thread
        (:meth:`handle_requests`), after its answers went out: deliver what its commits queued
        (``unsent``: a decision, a new PvP's pacs.009) from this thread if the lanes are idle
        and ``may_wait`` (another thread of its kind stays free for what comes meanwhile, see
        Batcher), else through the lanes. Not before the answers: the sender of what was
        received may be the one it posts to, and a caller waits for its answer meanwhile."""
        self.delivery.committed(unsent, deliver_here=may_wait)

    def process_pending_inbox(self, older_than_ms: int) -> None:
        self.reception.process_pending_inbox(older_than_ms)

    # --- the sweeper and views --------------------------------------------------------------

    def sweep(self) -> None:
        self.sweeper.sweep()

    def abort_if_overdue(self, pvp_id: str) -> None:
        self.sweeper.abort_if_overdue(pvp_id)

    def pvp_view(self, pvp_id: str) -> dict[str, Any]:
        return read_pvp(self.engine, pvp_id)

    def pvp_messages(self, pvp_id: str) -> list[dict[str, Any]]:
        return read_messages(self.engine, pvp_id)


__all__ = ["Connector", "Inbound", "Network", "Unsent"]
