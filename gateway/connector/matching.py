"""Instructions, trades and matching: what makes a PvP. Two parties' instructions match when
they mirror each other within ``match_window_seconds``; a trade (test shortcut) is a matched
pair given whole. A new PvP is written with its legs and, unbatched, its two pacs.009, in the
caller's unit of work."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway.config import ConnectorSettings
from gateway.connector import pgrepo, pgtx, store
from gateway.connector.handlers import Handlers
from gateway.connector.messages import credit_transfer, new_id
from gateway.connector.model import LegStatus, PvPState
from gateway.connector.outbox import Outbox, Outgoing, Work
from gateway.connector.registry import Network, Registry, check_bic, check_id, parse_time
from gateway.connector.rows import InstructionRow, LegRow, NewInstruction, PvPRow
from gateway.connector.store import now_ms
from gateway.errors import (
    Conflict,
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    Unauthorized,
    Unprocessable,
)
from gateway.iso20022 import CURRENCY_EXPONENTS, MAX_MINOR_UNITS, Pacs009
from gateway.sqlite.fastsql import run

MAX_BULK_TRADES = 1000


@dataclass(frozen=True, slots=True)
class Side:
    """One party of a trade: sells ``amount`` of ``currency`` from ``account`` and receives
    the other side's currency into ``receive_account``."""

    bic: str
    currency: str
    amount: int
    account: str
    receive_account: str
    reference: str


@dataclass(frozen=True, slots=True)
class NewPvP:
    """A PvP not yet written: its row, when it was made, its legs' rows (by name), and
    unbatched its pacs.009."""

    pvp: PvPRow
    created_at: int
    legs: list[LegRow]
    outgoing: list[Outgoing]

    @property
    def id(self) -> str:
        return self.pvp.id


def side(data: Any, name: str) -> Side:
    if not isinstance(data, dict):
        raise InvalidInput(f"{name}: an object is required")
    currency = data.get("currency")
    amount = data.get("amount")
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
        raise InvalidInput(f"{name}.currency: not a settled currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_MINOR_UNITS:
        raise InvalidInput(f"{name}.amount: a positive integer of minor units is required")
    accounts = []
    for key in ("account", "receive_account"):
        acc = data.get(key)
        if not isinstance(acc, str) or not 1 <= len(acc) <= 34:
            raise InvalidInput(f"{name}.{key}: 1-34 characters required")
        accounts.append(acc)
    ref = data.get("reference") or new_id("T")
    return Side(
        bic=check_bic(data.get("bic"), f"{name}.bic"),
        currency=str(currency),
        amount=amount,
        account=accounts[0],
        receive_account=accounts[1],
        reference=check_id(ref, f"{name}.reference"),
    )


def instruction_view(
    instruction: NewInstruction | InstructionRow, pvp_id: str | None
) -> dict[str, Any]:
    """An instruction as ``POST /v1/instructions`` answers it (``pvp_id``: what it matched)."""
    return {
        "instruction_id": instruction.instruction_id,
        "party_bic": instruction.party_bic,
        "counterparty_bic": instruction.counterparty_bic,
        "status": "matched" if pvp_id else "open",
        "pvp_id": pvp_id,
    }


def _leg_names(a: Side, b: Side) -> tuple[str, str]:
    if a.currency == "KZT":
        return "DT", "FX"
    if b.currency == "KZT":
        return "FX", "DT"
    return "A", "B"


class Matching:
    """Makes PvPs; each command works in the caller's unit of work and returns its result."""

    def __init__(
        self, cfg: ConnectorSettings, registry: Registry, outbox: Outbox, handlers: Handlers
    ) -> None:
        self.cfg = cfg
        self.bic = cfg.bic
        self.registry = registry
        self.outbox = outbox
        self.handlers = handlers

    # --- instructions -----------------------------------------------------------------------

    def instruction_row(self, principal: Network, data: Any) -> NewInstruction:
        """A checked instruction (``POST /v1/instructions``), before any transaction."""
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        iid = check_id(data.get("instruction_id"), "instruction_id")
        party = check_bic(data.get("party_bic"), "party_bic")
        counterparty = check_bic(data.get("counterparty_bic"), "counterparty_bic")
        legs_in = {}
        for name in ("sell", "buy"):
            part = data.get(name)
            if not isinstance(part, dict):
                raise InvalidInput(f"{name}: an object is required")
            legs_in[name] = side(
                {**part, "bic": party, "receive_account": part.get("account")}, name
            )
        sell, buy = legs_in["sell"], legs_in["buy"]
        if sell.currency == buy.currency:
            raise InvalidInput("sell and buy currencies must differ")
        if party == counterparty:
            raise InvalidInput("a party cannot trade with itself")
        if principal.bic != party and principal.currency != sell.currency:
            raise Unauthorized(f"{principal.bic} may not instruct for {party}")
        value_time = parse_time(str(data.get("value_time")), "value_time")
        terms: tuple[object, ...] = (iid, party, counterparty, value_time)
        for one in (sell, buy):
            terms += (one.currency, one.amount, one.account)
        return NewInstruction(
            instruction_id=iid,
            party_bic=party,
            counterparty_bic=counterparty,
            sell_currency=sell.currency,
            sell_amount=sell.amount,
            sell_account=sell.account,
            buy_currency=buy.currency,
            buy_amount=buy.amount,
            buy_account=buy.account,
            value_time=value_time,
            body_sha256=hashlib.sha256(repr(terms).encode()).hexdigest(),
            submitted_by=principal.bic,
        )

    def instruct(self, work: Work, new: NewInstruction) -> tuple[int, dict[str, Any], str | None]:
        """File an instruction and match it: (status, view, the PvP made or None). The same
        instruction again answers 200 with what it became; another body under its id, DU01."""
        old = store.read_instruction(work.conn, new.party_bic, new.instruction_id)
        if old is not None:
            if old.body_sha256 != new.body_sha256:
                raise IdempotencyConflict(
                    f"instruction {new.instruction_id} exists with another body"
                )
            return 200, instruction_view(old, old.pvp_id), None
        store.insert_instruction(work.conn, new, now_ms())
        matched = self._match(work, new)
        counterparty = new.counterparty_bic
        if matched is None and counterparty in self.cfg.auto_counter_instruct:
            mirror = self._mirror(new, dict(self.cfg.auto_counter_instruct[counterparty]))
            store.insert_instruction(work.conn, mirror, now_ms())
            matched = self._match(work, mirror)
        return 201, instruction_view(new, matched), matched

    def _mirror(self, new: NewInstruction, accounts: dict[str, str]) -> NewInstruction:
        try:
            sell_acc, buy_acc = accounts[new.buy_currency], accounts[new.sell_currency]
        except KeyError as exc:
            raise Unprocessable(f"auto counterparty has no {exc.args[0]} account") from None
        key = f"{new.party_bic}/{new.instruction_id}"
        return replace(
            new,
            instruction_id="auto-" + hashlib.sha256(key.encode()).hexdigest()[:28],
            party_bic=new.counterparty_bic,
            counterparty_bic=new.party_bic,
            sell_currency=new.buy_currency,
            sell_amount=new.buy_amount,
            sell_account=sell_acc,
            buy_currency=new.sell_currency,
            buy_amount=new.sell_amount,
            buy_account=buy_acc,
            body_sha256="auto",
            submitted_by=self.bic,
        )

    def _match(self, work: Work, new: NewInstruction) -> str | None:
        window = int(self.cfg.match_window_seconds * 1000)
        wanted = {
            "party_bic": new.counterparty_bic,
            "counterparty_bic": new.party_bic,
            "sell_currency": new.buy_currency,
            "sell_amount": new.buy_amount,
            "buy_currency": new.sell_currency,
            "buy_amount": new.sell_amount,
            "value_from": new.value_time - window,
            "value_to": new.value_time + window,
        }
        other = store.first_match(work.conn, wanted)
        if other is None:
            return None
        a = Side(
            new.party_bic,
            new.sell_currency,
            new.sell_amount,
            new.sell_account,
            new.buy_account,
            new.instruction_id,
        )
        b = Side(
            other.party_bic,
            other.sell_currency,
            other.sell_amount,
            other.sell_account,
            other.buy_account,
            other.instruction_id,
        )
        pvp_id = new_id("PVP")
        value_time = min(new.value_time, other.value_time)
        self.insert(work, [self.new_pvp(pvp_id, a, b, value_time)])
        matched = {
            "k_party_bic": new.party_bic,
            "k_instruction_id": new.instruction_id,
            "k_other_id": other.id,
            "k_pvp_id": pvp_id,
        }
        run(work.conn, store.SET_INSTRUCTIONS_MATCHED, matched)
        return pvp_id

    # --- trades -----------------------------------------------------------------------------

    def trade(self, data: Any) -> NewPvP:
        """A trade's body (``POST /v1/trades``) -> the PvP to insert."""
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        a, b = side(data.get("a"), "a"), side(data.get("b"), "b")
        if a.currency == b.currency or a.bic == b.bic:
            raise InvalidInput("the two sides need different currencies and parties")
        deadline = parse_time(str(data.get("value_time")), "value_time")
        pvp_id = check_id(data.get("pvp_id") or new_id("PVP"), "pvp_id")
        return self.new_pvp(pvp_id, a, b, deadline)

    def trades(self, data: Any) -> list[NewPvP]:
        """``{"trades": [<trade>, ...]}`` -> the PvPs to insert, all valid or refused."""
        if not isinstance(data, dict) or not isinstance(data.get("trades"), list):
            raise InvalidInput('trades: a list of trades is required ({"trades": [...]})')
        trades = data["trades"]
        if not 1 <= len(trades) <= MAX_BULK_TRADES:
            raise InvalidInput(f"trades: 1 to {MAX_BULK_TRADES} trades per request")
        news: list[NewPvP] = []
        index: dict[str, int] = {}
        for i, trade in enumerate(trades):
            try:
                new = self.trade(trade)
            except GatewayError as exc:
                raise type(exc)(f"trades[{i}]: {exc.detail}") from None
            if new.id in index:
                raise InvalidInput(f"trades[{i}]: pvp_id {new.id} repeats trades[{index[new.id]}]")
            index[new.id] = i
            news.append(new)
        return news

    def insert_new(self, work: Work, news: list[NewPvP], *, bulk: bool) -> None:
        """Write new PvPs, refusing all of them if one's id exists (the first, by order;
        ``bulk``: named by its index in the request)."""
        index = {new.id: i for i, new in enumerate(news)}
        tx = pgtx.tx_of(work.conn)
        if tx is not None:
            found: Any = pgrepo.existing_pvps(tx, list(index))
        elif not bulk:
            found = run(work.conn, store.SELECT_PVP_ID, {"pvp_id": news[0].id})
        else:
            found = run(work.conn, store.SELECT_PVP_IDS_IN, {"pvp_ids": list(index)})
        existing: list[str] = [r[0] for r in found]
        if existing:
            first = min(existing, key=index.__getitem__)
            where = f"trades[{index[first]}]: " if bulk else ""
            raise Conflict(f"{where}PvP {first} exists")
        self.insert(work, news)

    def new_pvp(self, pvp_id: str, a: Side, b: Side, deadline: int) -> NewPvP:
        """The rows of a new PvP and, unbatched, its two pacs.009 (built before any
        transaction by a trade: the writer lock is not held while XML is built)."""
        nets = []
        for one in (a, b):
            net = self.registry.network_for(one.currency)
            if net is None:
                raise Unprocessable(f"no network settles {one.currency}: register one")
            nets.append(net)
        secret = secrets.token_hex(32)
        condition = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
        pvp = PvPRow(pvp_id, deadline, condition, secret, PvPState.PENDING)
        created_at = now_ms()
        names = _leg_names(a, b)
        batched = self.cfg.batch_max > 1
        status = LegStatus.QUEUED if batched else LegStatus.INSTRUCTED
        legs = sorted(  # by name: the legs' order everywhere else
            (
                LegRow(
                    pvp_id=pvp_id,
                    leg=leg,
                    uetr=str(uuid.uuid4()),
                    network_bic=net.bic,
                    currency=one.currency,
                    amount=one.amount,
                    debtor_bic=one.bic,
                    debtor_account=one.account,
                    creditor_bic=other.bic,
                    creditor_account=other.receive_account,
                    end_to_end_id=one.reference,
                    pacs009_msg_id=new_id(),
                    status=status,
                    # The columns' defaults, given so that these are whole rows.
                    reason=None,
                    locked_at=None,
                    acknowledged=False,
                    decision_sent_at=None,
                    decision_queued=False,
                    redeliver_at=None,
                    redeliveries=0,
                )
                for one, other, net, leg in ((a, b, nets[0], names[0]), (b, a, nets[1], names[1]))
            ),
            key=_leg_name,
        )
        outgoing = []
        if not batched:
            for leg_row in legs:
                msg = Pacs009(
                    msg_id=leg_row.pacs009_msg_id,
                    created=datetime.now(UTC),
                    transactions=(credit_transfer(pvp, leg_row),),
                )
                outgoing.append(self.outbox.outgoing([pvp_id], leg_row.network_bic, msg))
        return NewPvP(pvp, created_at, legs, outgoing)

    def insert(self, work: Work, news: list[NewPvP]) -> None:
        """New PvPs, their legs and their pacs.009: one statement per table for them all."""
        pvps = [(new.pvp, new.created_at) for new in news]
        self.handlers.repo.insert_pvps(work, pvps, [leg for new in news for leg in new.legs])
        self.handlers.write_outgoing(work, [out for new in news for out in new.outgoing])


def _leg_name(leg: LegRow) -> str:
    return leg.leg


__all__ = ["MAX_BULK_TRADES", "Matching", "NewPvP", "Side", "instruction_view", "side"]
