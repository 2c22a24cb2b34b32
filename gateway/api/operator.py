"""Operator API: the DT ledger. Parse, call the ledger service, map to a schema; no logic."""

from __future__ import annotations

from typing import Annotated, TypeVar

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter

from gateway.api import schemas as s
from gateway.api.deps import role_guard
from gateway.auth import Principal, Role
from gateway.ledger import model as m
from gateway.ledger import service
from gateway.ledger.group import GroupCommitter
from gateway.ledger.store import LedgerUnitOfWork

operator_only = {"principal": Provide(role_guard(Role.OPERATOR), sync_to_thread=False)}


R = TypeVar("R", m.Wallet, m.Transfer, m.Lock)
M = TypeVar("M", m.Issue, m.Redeem)


def _uow(state: State, *, readonly: bool = False) -> LedgerUnitOfWork:
    return LedgerUnitOfWork(state.engine, readonly=readonly)


def _apply(state: State, op: m.Operation, expected: type[R]) -> R:
    committer: GroupCommitter = state.ledger_committer
    result = committer.submit(op)
    assert isinstance(result, expected)
    return result


def open_wallet_of(d: s.WalletCreate) -> m.OpenWallet:
    return m.OpenWallet(id=d.id, kind=d.kind, owner=d.owner, currency=d.currency)


def transfer_of(d: s.TransferCreate) -> m.MakeTransfer:
    return m.MakeTransfer(
        id=d.id,
        debit_wallet_id=d.debit_wallet_id,
        credit_wallet_id=d.credit_wallet_id,
        amount=d.amount,
        currency=d.currency,
        reference=d.reference,
    )


def movement_of(cls: type[M], d: s.IssuanceCreate) -> M:
    return cls(
        id=d.id, wallet_id=d.wallet_id, amount=d.amount, currency=d.currency, reference=d.reference
    )


def lock_of(d: s.LockCreate) -> m.CreateLock:
    return m.CreateLock(
        id=d.id,
        debit_wallet_id=d.debit_wallet_id,
        credit_wallet_id=d.credit_wallet_id,
        amount=d.amount,
        currency=d.currency,
        expires_at=d.expires_at,
        condition=d.condition,
        reference=d.reference,
    )


def to_operation(op: s.BatchOperation) -> m.Operation:
    """Map one batch item to a ledger command (single calls use the same mappers)."""
    if isinstance(op, s.OpenWalletOp):
        return open_wallet_of(op)
    if isinstance(op, s.TransferOp):
        return transfer_of(op)
    if isinstance(op, s.IssueOp):
        return movement_of(m.Issue, op)
    if isinstance(op, s.RedeemOp):
        return movement_of(m.Redeem, op)
    if isinstance(op, s.LockOp):
        return lock_of(op)
    if isinstance(op, s.CommitOp):
        return m.CommitLock(id=op.id, fulfilment=op.fulfilment)
    if isinstance(op, s.ReleaseOp):
        return m.ReleaseLock(id=op.id)
    return m.SetWalletStatus(id=op.id, status=op.status)


class WalletController(Controller):
    path = "/v1/wallets"
    tags = ["ledger"]
    dependencies = operator_only

    @post("/", status_code=201, sync_to_thread=True, summary="Open a wallet (idempotent by id)")
    def open_wallet(
        self, state: State, data: JSONBody[s.WalletCreate], principal: NamedDependency[Principal]
    ) -> s.WalletOut:
        return s.WalletOut.of(_apply(state, open_wallet_of(data), m.Wallet))

    @get("/{wallet_id:str}", sync_to_thread=True, summary="A wallet's balances")
    def get_wallet(
        self, state: State, wallet_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> s.WalletOut:
        return s.WalletOut.of(service.get_wallet(_uow(state, readonly=True), wallet_id))

    @post(
        "/{wallet_id:str}/status",
        status_code=200,
        sync_to_thread=True,
        summary="Freeze, reopen or close",
    )
    def set_status(
        self,
        state: State,
        wallet_id: FromPath[str],
        data: JSONBody[s.WalletStatusChange],
        principal: NamedDependency[Principal],
    ) -> s.WalletOut:
        op = m.SetWalletStatus(id=wallet_id, status=data.status)
        return s.WalletOut.of(_apply(state, op, m.Wallet))

    @get("/{wallet_id:str}/history", sync_to_thread=True, summary="Balance changes, oldest first")
    def history(
        self,
        state: State,
        wallet_id: FromPath[str],
        principal: NamedDependency[Principal],
        cursor: Annotated[int | None, Parameter(ge=0)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> s.HistoryOut:
        page = service.history(_uow(state, readonly=True), wallet_id, cursor, limit)
        return s.HistoryOut.of(wallet_id, page)


class TransferController(Controller):
    path = "/v1"
    tags = ["ledger"]
    dependencies = operator_only

    @post(
        "/transfers", status_code=201, sync_to_thread=True, summary="Move posted DT between wallets"
    )
    def transfer(
        self, state: State, data: JSONBody[s.TransferCreate], principal: NamedDependency[Principal]
    ) -> s.TransferOut:
        return s.TransferOut.of(_apply(state, transfer_of(data), m.Transfer))

    @get("/transfers/{transfer_id:str}", sync_to_thread=True, summary="One transfer")
    def get_transfer(
        self, state: State, transfer_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> s.TransferOut:
        return s.TransferOut.of(service.get_transfer(_uow(state, readonly=True), transfer_id))

    @post("/issuances", status_code=201, sync_to_thread=True, summary="Central bank issues DT")
    def issue(
        self, state: State, data: JSONBody[s.IssuanceCreate], principal: NamedDependency[Principal]
    ) -> s.TransferOut:
        return s.TransferOut.of(_apply(state, movement_of(m.Issue, data), m.Transfer))

    @post("/redemptions", status_code=201, sync_to_thread=True, summary="Central bank redeems DT")
    def redeem(
        self, state: State, data: JSONBody[s.IssuanceCreate], principal: NamedDependency[Principal]
    ) -> s.TransferOut:
        return s.TransferOut.of(_apply(state, movement_of(m.Redeem, data), m.Transfer))

    @post(
        "/batches", status_code=200, sync_to_thread=True, summary="Many operations, all or nothing"
    )
    def batch(
        self, state: State, data: JSONBody[s.BatchCreate], principal: NamedDependency[Principal]
    ) -> s.BatchOut:
        ops = [to_operation(op) for op in data.operations]
        results = service.apply(_uow(state), ops)
        return s.BatchOut(results=[s.result_out(r) for r in results])

    @get("/ledger/invariants", sync_to_thread=True, summary="Recheck conservation and balances")
    def invariants(self, state: State, principal: NamedDependency[Principal]) -> s.InvariantsOut:
        return s.InvariantsOut.of(service.check_invariants(_uow(state, readonly=True)))


class LockController(Controller):
    path = "/v1/locks"
    tags = ["ledger"]
    dependencies = operator_only

    @post("/", status_code=201, sync_to_thread=True, summary="Reserve DT toward a beneficiary")
    def create(
        self, state: State, data: JSONBody[s.LockCreate], principal: NamedDependency[Principal]
    ) -> s.LockOut:
        return s.LockOut.of(_apply(state, lock_of(data), m.Lock))

    @get("/{lock_id:str}", sync_to_thread=True, summary="One lock")
    def get_lock(
        self, state: State, lock_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> s.LockOut:
        return s.LockOut.of(service.get_lock(_uow(state, readonly=True), lock_id))

    @post(
        "/{lock_id:str}/commit",
        status_code=200,
        sync_to_thread=True,
        summary="Post to the beneficiary",
    )
    def commit(
        self,
        state: State,
        lock_id: FromPath[str],
        principal: NamedDependency[Principal],
        data: JSONBody[s.LockCommit | None] = None,
    ) -> s.LockOut:
        op = m.CommitLock(id=lock_id, fulfilment=data.fulfilment if data else None)
        return s.LockOut.of(_apply(state, op, m.Lock))

    @post(
        "/{lock_id:str}/release",
        status_code=200,
        sync_to_thread=True,
        summary="Void: back to the owner",
    )
    def release(
        self,
        state: State,
        lock_id: FromPath[str],
        principal: NamedDependency[Principal],
        data: JSONBody[s.LockRelease | None] = None,
    ) -> s.LockOut:
        return s.LockOut.of(_apply(state, m.ReleaseLock(id=lock_id), m.Lock))


ROUTES = [WalletController, TransferController, LockController]

__all__ = ["ROUTES", "to_operation"]
