"""The chaos run's clients: a bounded, seeded mix of PvP trades (at the connector), mints (the
exchange's key), on-chain redemptions (the token holders), and ledger transfers and locks
(the operator's key), sent through the load balancer by a few threads.

Every request is retried on a dropped connection, a 5xx or a 429 with the same id or
Idempotency-Key, as a careful client does, until it gets a definitive answer or the run's
deadline passes. What each operation got is recorded, for the invariant report: which PvPs
exist, which mints and ledger operations were acknowledged, and every 5xx seen.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception

from ops.chaos.processes import ROOT
from ops.chaos.system import (
    AED_PAYER,
    AED_RECEIVER,
    BANK_A,
    BANK_B,
    CB_WALLET,
    DT_BANK,
    DT_WALLET,
    EXCHANGE_WALLET,
    FX_BANK,
    System,
)

KINDS = {"pvp": 0.3, "mint": 0.25, "redeem": 0.15, "transfer": 0.2, "lock": 0.1}
RETRY_PAUSE = 0.2


@dataclass(frozen=True)
class Op:
    n: int
    kind: str
    amount: int
    holder: int = 0
    """mint: the receiving holder; redeem: the burning one (index into the holders)."""
    forward: bool = True
    """transfer, lock: bank A pays bank B (else B pays A); lock: committed (else released)."""
    aed: int = 0
    seconds: float = 0.0


def plan(rng: random.Random, count: int, holders: int) -> list[Op]:
    """The operations of a run, all drawn from ``rng`` up front (the seed fixes them)."""
    kinds, weights = list(KINDS), list(KINDS.values())
    ops = []
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        ops.append(
            Op(
                n,
                kind,
                amount=rng.randrange(1_00, 5_000_00),
                holder=rng.randrange(holders),
                forward=rng.random() < 0.5,
                aed=rng.randrange(1, 2_00),
                seconds=rng.uniform(4.0, 7.0),
            )
        )
    return ops


@dataclass
class Record:
    """What the clients sent and what they were told."""

    pvps: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Created PvPs: id -> (tiyn, AED fils)."""
    mints: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency-Key -> the mint as the gateway answered it."""
    refused: Counter[str] = field(default_factory=Counter)
    """Definitive 4xx answers, by operation and problem code."""
    redeem_txs: list[str] = field(default_factory=list)
    lost_redeems: int = 0
    """Burns sent that never got a receipt (the node died with them in its mempool)."""
    ledger_ops: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """Acknowledged transfers and committed locks: id -> (debit, credit, amount)."""
    released_locks: int = 0
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    dropped_connections: int = 0
    unresolved: list[str] = field(default_factory=list)
    """Operations still without a definitive answer at the deadline."""
    done: Counter[str] = field(default_factory=Counter)
    client_errors: list[str] = field(default_factory=list)
    """Exceptions of the clients themselves (not answers of the system)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Clients:
    def __init__(self, system: System, seed: int, record: Record, deadline: float) -> None:
        self.system = system
        self.seed = seed
        self.record = record
        self.deadline = deadline
        abi = json.loads((ROOT / "solidity" / "build" / "DTStablecoin.json").read_text())["abi"]
        w3 = Web3(Web3.HTTPProvider(system.anvil.url, request_kwargs={"timeout": 5}))
        self.token: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(system.contract), abi=abi
        )
        self.w3 = w3

    # --- one request, retried until definitive ------------------------------------------------

    def send(
        self, client: httpx.Client, method: str, path: str, body: Any, headers: Any = None
    ) -> httpx.Response | None:
        while time.monotonic() < self.deadline:
            try:
                resp = client.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                with self.record.lock:
                    self.record.dropped_connections += 1
                time.sleep(RETRY_PAUSE)
                continue
            if resp.status_code >= 500:
                with self.record.lock:
                    self.record.server_errors.append(
                        {
                            "method": method,
                            "url": str(resp.request.url),
                            "status": resp.status_code,
                            "body": resp.text[:500],
                            "at": time.time(),
                        }
                    )
            if resp.status_code >= 500 or resp.status_code == 429:
                time.sleep(max(RETRY_PAUSE, float(resp.headers.get("retry-after", 0) or 0)))
                continue
            return resp
        return None

    def _refused(self, kind: str, resp: httpx.Response) -> None:
        try:
            code = resp.json().get("code", resp.status_code)
        except ValueError:
            code = resp.status_code
        with self.record.lock:
            self.record.refused[f"{kind} {resp.status_code} {code}"] += 1

    def _unresolved(self, what: str) -> None:
        with self.record.lock:
            self.record.unresolved.append(what)

    # --- the operations -----------------------------------------------------------------------

    def run(self, op: Op) -> None:
        try:
            getattr(self, f"_{op.kind}")(op)
        except Exception as exc:  # a fault of the runner's own: reported, fails the run
            with self.record.lock:
                self.record.client_errors.append(f"{op}: {exc!r}"[:500])
            return
        with self.record.lock:
            self.record.done[op.kind] += 1

    def _pvp(self, op: Op) -> None:
        pvp_id = f"PVP{self.seed:08x}{op.n:06d}"[:30]
        value_time = datetime.now(UTC) + timedelta(seconds=op.seconds)
        body = {
            "pvp_id": pvp_id,
            "value_time": value_time.isoformat(),
            "a": {"bic": DT_BANK, "currency": "KZT", "amount": op.amount, "account": DT_WALLET,
                  "receive_account": AED_RECEIVER},
            "b": {"bic": FX_BANK, "currency": "AED", "amount": op.aed, "account": AED_PAYER,
                  "receive_account": CB_WALLET},
        }  # fmt: skip
        resp = self.send(self.system.conn, "POST", "/v1/trades", body)
        if resp is None:
            self._unresolved(f"trade {pvp_id}")
        elif resp.status_code in (201, 409):  # 409: an earlier attempt created it
            with self.record.lock:
                self.record.pvps[pvp_id] = (op.amount, op.aed)
        else:
            self._refused("trade", resp)

    def _mint(self, op: Op) -> None:
        key = f"chaos-{self.seed}-{op.n}"
        body = {
            "amount": op.amount,
            "source_wallet_id": EXCHANGE_WALLET,
            "evm_address": self.system.holders[op.holder],
        }
        headers = {"Idempotency-Key": key}
        resp = self.send(self.system.exchange, "POST", "/v1/stablecoin/mints", body, headers)
        if resp is None:
            self._unresolved(f"mint {key}")
        elif resp.status_code in (200, 201):
            with self.record.lock:
                self.record.mints[key] = resp.json()
        else:
            self._refused("mint", resp)

    def _redeem(self, op: Op) -> None:
        holder = self.system.holders[op.holder]
        while time.monotonic() < self.deadline:
            try:
                balance = int(self.token.functions.balanceOf(holder).call())
                if balance == 0:
                    return
                amount = min(op.amount, balance)
                fn = self.token.functions.redeem(amount, EXCHANGE_WALLET)
                tx = fn.transact({"from": holder})
            except ContractLogicError:
                return  # another burn of this holder's took the balance first
            except (OSError, Web3Exception, ValueError):  # the node is down or restarting
                time.sleep(RETRY_PAUSE)
                continue
            with self.record.lock:
                self.record.redeem_txs.append(tx.hex())
            try:
                self.w3.eth.wait_for_transaction_receipt(tx, timeout=10, poll_latency=0.1)
            except Exception:
                with self.record.lock:
                    self.record.lost_redeems += 1
            return

    def _transfer(self, op: Op) -> None:
        debit, credit = (BANK_A, BANK_B) if op.forward else (BANK_B, BANK_A)
        op_id = f"chaos-{self.seed}-t{op.n}"
        body = {"id": op_id, "debit_wallet_id": debit, "credit_wallet_id": credit,
                "amount": op.amount}  # fmt: skip
        resp = self.send(self.system.op, "POST", "/v1/transfers", body)
        if resp is None:
            self._unresolved(f"transfer {op_id}")
        elif resp.status_code in (200, 201):
            with self.record.lock:
                self.record.ledger_ops[op_id] = (debit, credit, op.amount)
        else:
            self._refused("transfer", resp)

    def _lock(self, op: Op) -> None:
        debit, credit = (BANK_A, BANK_B) if op.forward else (BANK_B, BANK_A)
        op_id = f"chaos-{self.seed}-l{op.n}"
        body = {"id": op_id, "debit_wallet_id": debit, "credit_wallet_id": credit,
                "amount": op.amount}  # fmt: skip
        resp = self.send(self.system.op, "POST", "/v1/locks", body)
        if resp is None or resp.status_code not in (200, 201):
            if resp is None:
                self._unresolved(f"lock {op_id}")
            else:
                self._refused("lock", resp)
            return
        commit = op.amount % 3 != 0  # two in three committed, drawn from the amount
        verb = "commit" if commit else "release"
        resolved = self.send(self.system.op, "POST", f"/v1/locks/{op_id}/{verb}", {})
        if resolved is None:
            self._unresolved(f"lock {op_id} {verb}")
        elif resolved.status_code in (200, 201):
            with self.record.lock:
                if commit:
                    self.record.ledger_ops[op_id] = (debit, credit, op.amount)
                else:
                    self.record.released_locks += 1
        else:
            self._refused(f"lock {verb}", resolved)


def drive(clients: Clients, ops: list[Op], workers: int, t0: float, duration: float) -> None:
    """Run ``ops`` on ``workers`` threads, spread evenly over ``duration`` seconds from ``t0``
    (operation n starts no earlier than its share of the time), so that the kills find work in
    flight; operations not started by the end are left out."""
    queue = iter(ops)
    take = threading.Lock()
    spacing = duration / max(1, len(ops))

    def work() -> None:
        while True:
            with take:
                op = next(queue, None)
            if op is None:
                return
            wait = t0 + op.n * spacing - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() >= t0 + duration:
                return
            clients.run(op)

    threads = [threading.Thread(target=work, name=f"load-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
