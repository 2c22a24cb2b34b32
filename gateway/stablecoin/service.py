"""Stablecoin use cases: request and drive mints, refunds, reconciliation, paying held
redemptions. With :mod:`~gateway.stablecoin.reserve` (attestations) and the watcher's pass
(:mod:`~gateway.stablecoin.watcher`), the only place that commits stablecoin state.

Exactly-once, the short version:

- a mint's DT moves into the segregated wallet in the transaction that creates the mint row
  (``uq_stablecoin_mint_idem`` makes a retried request find it instead);
- the chain mints each request id at most once, and the id is derived from the mint id, so
  resubmitting after a crash either mints or answers ``MintRequestAlreadyUsed`` (= done);
- a refund is the ledger transfer ``refund-<mint id>``, in the transaction that moves the mint
  to *refunded*; it happens only after the contract refused definitively.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from eth_utils.address import is_checksum_address, to_checksum_address

from gateway.collateral.anchoring import AnchorUnavailable
from gateway.db import retrying, utcnow
from gateway.errors import GatewayError, InvalidInput, TransientError
from gateway.faults import crash_point
from gateway.ledger import service as ledger
from gateway.ledger.errors import WalletNotFound
from gateway.ledger.model import MakeTransfer, OpenWallet, WalletKind
from gateway.logcontext import binds
from gateway.stablecoin import admission
from gateway.stablecoin.chain_errors import (
    ChainUnavailable,
    ContractReverted,
    InvalidChainInput,
    MintRequestAlreadyUsed,
    ReserveGuardRefused,
    TransactionNotConfirmed,
)
from gateway.stablecoin.chain_values import SubmittedTx, TxResult
from gateway.stablecoin.events import record_mint_event, record_redemption_event
from gateway.stablecoin.model import (
    UNSETTLED,
    CollateralShortfall,
    ForeignWallet,
    IdempotencyKeyReused,
    InvalidEvmAddress,
    Mint,
    MintNotFound,
    MintRequest,
    MintsHalted,
    MintState,
    NotAnExchangeWallet,
    Reconciliation,
    Redemption,
    RedemptionNotFound,
    redemption_payout,
    redemption_transfer_id,
    request_id_of,
)
from gateway.stablecoin.reserve import ensure_reserve
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)

T = TypeVar("T")

MINT_GAS_LIMIT = 150_000
"""Gas limit of a mint sent without an estimate (the worst case measured is ~100,500)."""
UowFactory = Callable[..., StablecoinUnitOfWork]
"""``uow()`` for a write transaction, ``uow(readonly=True)`` for reads."""


# ------------------------------------------------------------------ set-up


def ensure_segregated_wallet(uow: StablecoinUnitOfWork, sc: Stablecoin) -> None:
    """Open the contract's segregated collateral wallet (idempotent)."""
    if sc.wallet_ready:
        return
    op = OpenWallet(
        id=sc.segregated_wallet_id,
        kind=WalletKind.SEGREGATED_COLLATERAL,
        owner=f"stablecoin {sc.contract.lower()}",
        currency=sc.currency,
    )
    retrying(uow, lambda: ledger.execute(uow, [op]))
    sc.wallet_ready = True


def checksum_address(address: str) -> str:
    """Accept all-lowercase (or all-uppercase) hex, or mixed case with a valid EIP-55 checksum."""
    body = address[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(address):
        raise InvalidEvmAddress(f"{address} fails its EIP-55 checksum")
    return str(to_checksum_address(address))


# ------------------------------------------------------------------ mint


def _check_halted(uow: StablecoinUnitOfWork, sc: Stablecoin) -> None:
    latest = uow.stablecoin.latest_reconciliation(sc.contract)
    if latest is not None and not latest.ok:
        raise MintsHalted(
            f"reconciliation #{latest.seq} at block {latest.block_number} found a gap of "
            f"{latest.gap} tiyn; minting resumes when a reconciliation finds none",
            gap=latest.gap,
        )


def _replay(existing: Mint, req: MintRequest) -> Mint:
    if existing.fingerprint != req.fingerprint():
        raise IdempotencyKeyReused(
            f"Idempotency-Key {req.idempotency_key!r} was used for another mint"
        )
    return existing


def _check_wallet(uow: StablecoinUnitOfWork, req: MintRequest) -> None:
    wallet = uow.ledger.wallet(req.source_wallet_id)
    if wallet is None:
        raise WalletNotFound(f"no wallet {req.source_wallet_id}", wallet_id=req.source_wallet_id)
    if wallet.kind is not WalletKind.EXCHANGE:
        raise NotAnExchangeWallet(f"wallet {wallet.id} is not an exchange wallet")
    if not req.exchange or wallet.owner != req.exchange:
        raise ForeignWallet(f"wallet {wallet.id} does not belong to this exchange")


def request_mint(
    uow: UowFactory, sc: Stablecoin, req: MintRequest, now: datetime | None = None
) -> tuple[Mint, bool]:
    """Accept a mint (DT into the segregated wallet + mint row + webhook, one transaction), then
    drive it on-chain. Returns the mint and whether this call created it (False: a replay).

    Every refusal (bad input, foreign wallet, insufficient DT, halted minting, reused key, and
    :mod:`admission`'s: limit, zero or contract address, paused contract, blocklisted address)
    happens before any DT moves or anything is sent.
    """
    req.validate()
    evm_address = checksum_address(req.evm_address)
    ensure_segregated_wallet(uow(), sc)

    read = uow(readonly=True)
    with read:
        existing = read.stablecoin.mint_by_key(req.exchange, req.idempotency_key)
        if existing is None:
            _check_wallet(read, req)
            _check_halted(read, sc)
    if existing is not None:
        return _replay(existing, req), False
    admission.admit(sc, req.amount, evm_address)

    mint_id = uuid.uuid4().hex
    write = uow()

    def accept() -> tuple[Mint, bool]:
        at = now or utcnow()
        found = write.stablecoin.mint_by_key(req.exchange, req.idempotency_key)
        if found is not None:  # a concurrent request with the same key won the race
            return _replay(found, req), False
        _check_halted(write, sc)
        m = Mint(
            id=mint_id,
            exchange=req.exchange,
            idempotency_key=req.idempotency_key,
            fingerprint=req.fingerprint(),
            source_wallet_id=req.source_wallet_id,
            segregated_wallet_id=sc.segregated_wallet_id,
            contract_address=sc.contract,
            evm_address=evm_address,
            amount=req.amount,
            request_id=request_id_of(mint_id).hex(),
            state=MintState.ACCEPTED,
            created_at=at,
            updated_at=at,
        )
        ledger.execute(
            write,
            [
                MakeTransfer(
                    id=m.transfer_id,
                    debit_wallet_id=req.source_wallet_id,
                    credit_wallet_id=sc.segregated_wallet_id,
                    amount=req.amount,
                    currency=sc.currency,
                    reference=f"stablecoin mint {m.id}",
                )
            ],
            at,
        )
        write.stablecoin.add_mint(m)
        record_mint_event(write.outbox, m, at)
        return m, True

    mint, created = retrying(write, accept)
    if not created:
        return mint, False
    ticket = sc.take_ticket()
    crash_point("mint.after_ledger", sc.faults)
    return drive_mint(uow, sc, mint.id, ticket=ticket, known=mint), True


def _transition(
    uow: UowFactory, sc: Stablecoin, mint_id: str, move: Callable[[Mint, datetime], Mint | None]
) -> Mint:
    """Apply ``move`` to the mint's current state under a row lock; write it and its webhook.
    ``move`` returns None when there is nothing to do (another worker got there first)."""
    write = uow()

    def work() -> Mint:
        at = utcnow()
        current = write.stablecoin.mint(mint_id, for_update=True)
        if current is None:
            raise MintNotFound(f"no mint {mint_id}")
        moved = move(current, at)
        if moved is None:
            return current
        write.stablecoin.update_mint(moved)
        record_mint_event(write.outbox, moved, at)
        return moved

    return retrying(write, work)


def _fail_and_refund(uow: UowFactory, sc: Stablecoin, mint_id: str, exc: GatewayError) -> Mint:
    def fail(m: Mint, at: datetime) -> Mint | None:
        return m.fail(exc.code, exc.detail, at) if m.state in UNSETTLED else None

    failed = _transition(uow, sc, mint_id, fail)
    log.warning("mint %s failed (%s): %s", mint_id, exc.code, exc.detail)
    return refund_mint(uow, sc, failed.id) if failed.state is MintState.FAILED else failed


def refund_mint(uow: UowFactory, sc: Stablecoin, mint_id: str) -> Mint:
    """Return a failed mint's DT to the exchange wallet it came from, exactly once."""
    write = uow()

    def work() -> Mint:
        at = utcnow()
        m = write.stablecoin.mint(mint_id, for_update=True)
        if m is None:
            raise MintNotFound(f"no mint {mint_id}")
        if m.state is not MintState.FAILED:
            return m
        refunded = m.refund(at)
        ledger.execute(
            write,
            [
                MakeTransfer(
                    id=m.refund_transfer_id,
                    debit_wallet_id=m.segregated_wallet_id,
                    credit_wallet_id=m.source_wallet_id,
                    amount=m.amount,
                    currency=sc.currency,
                    reference=f"stablecoin mint {m.id} refund",
                )
            ],
            at,
        )
        write.stablecoin.update_mint(refunded)
        record_mint_event(write.outbox, refunded, at)
        return refunded

    try:
        return retrying(write, work)
    except GatewayError as exc:  # e.g. the source wallet was closed: stays failed, retried later
        if isinstance(exc, TransientError):
            raise
        log.error("refund of mint %s refused: %s: %s", mint_id, exc.code, exc.detail)
        return get_mint(uow, mint_id)


def _already_minted(uow: UowFactory, sc: Stablecoin, m: Mint) -> Mint:
    found = sc.chain.minted_by_request(bytes.fromhex(m.request_id), sc.settings.start_block)
    if found is None:  # used, but the log is not visible yet (node lag): try again later
        return m

    def confirm(current: Mint, at: datetime) -> Mint | None:
        if current.state not in UNSETTLED:
            return None
        return current.confirm(found.tx_hash, found.block_number, at)

    return _transition(uow, sc, m.id, confirm)


def _submit(uow: UowFactory, sc: Stablecoin, m: Mint, ticket: int | None) -> SubmittedTx:
    """Send the mint, attesting the reserve first when no attestation covers it yet (its
    ``ticket`` is newer than the last attested one) or when the guard refuses. Attestations and
    mints share the operator's nonce sequence, so an attestation sent before a mint is mined
    before it, and it covers every mint accepted before its balance was read."""
    rid = bytes.fromhex(m.request_id)
    if ticket is not None:
        if ticket > sc.covered_ticket:
            ensure_reserve(uow, sc, m.amount, ticket=ticket)
        if ticket <= sc.covered_ticket:
            # Covered by an attestation sent before it: no estimate needed. Should it revert
            # anyway (paused meanwhile, a rival process), the retry estimates and says why.
            return sc.chain.submit(
                sc.operator, "mint", m.evm_address, m.amount, rid, gas=MINT_GAS_LIMIT
            )
    for _ in range(5):
        generation = sc.attest_generation
        try:
            return sc.chain.submit(sc.operator, "mint", m.evm_address, m.amount, rid)
        except ReserveGuardRefused as exc:
            ensure_reserve(uow, sc, m.amount, refusal=exc, seen_generation=generation)
    return sc.chain.submit(sc.operator, "mint", m.evm_address, m.amount, rid)


@binds("mint_id")
def drive_mint(
    uow: UowFactory,
    sc: Stablecoin,
    mint_id: str,
    *,
    ticket: int | None = None,
    known: Mint | None = None,
) -> Mint:
    """Take an unsettled mint as far as it goes now: submit, confirm, or fail and refund.

    Chain outages (and reserve contention) leave it accepted or submitted; :func:`resume_mints`
    tries again. A request id already used on-chain means an earlier submission got through:
    the mint is then minted. A quick confirmation goes straight from accepted to minted; one
    slower than ``submitted_after_seconds`` is recorded as submitted (with its hash) first.
    """
    m = known if known is not None and known.id == mint_id else get_mint(uow, mint_id)
    if m.state is MintState.FAILED:
        return refund_mint(uow, sc, m.id)
    if m.settled:
        return m
    for _ in range(5):
        try:
            submitted = _submit(uow, sc, m, ticket)
            ticket = None  # a retry relies on the guard's verdict
        except MintRequestAlreadyUsed:
            return _already_minted(uow, sc, m)
        except ReserveGuardRefused as exc:
            log.info("mint %s waits for reserve headroom: %s", m.id, exc.detail)
            continue
        except (ContractReverted, InvalidChainInput, CollateralShortfall) as exc:
            return _fail_and_refund(uow, sc, m.id, exc)  # refused before anything was sent
        except (ChainUnavailable, TransactionNotConfirmed, AnchorUnavailable) as exc:
            log.warning("mint %s not submitted, will retry: %s", m.id, exc.detail)
            return m
        crash_point("mint.after_submit", sc.faults)
        try:
            result = _confirm(uow, sc, m, submitted)
        except MintRequestAlreadyUsed:
            return _already_minted(uow, sc, m)
        except ContractReverted as exc:
            # Mined, but reverted: typically another mint took the reserve headroom earlier in
            # the same block (the replayed reason then misses it). Submitting again finds out
            # where the mint stands: minted, retried, or refused before sending.
            log.info("mint %s reverted on-chain (%s), submitting again", m.id, exc.detail)
            continue
        except (ChainUnavailable, TransactionNotConfirmed) as exc:
            log.warning("mint %s submitted, not confirmed yet: %s", m.id, exc.detail)
            return get_mint(uow, m.id)
        return _transition(uow, sc, m.id, partial(_confirmed, result))
    log.warning("mint %s still short of reserve headroom: the recovery job retries it", m.id)
    return get_mint(uow, m.id)


def _confirmed(result: TxResult, current: Mint, at: datetime) -> Mint | None:
    if current.state not in UNSETTLED:
        return None
    return current.confirm(result.tx_hash, result.block_number, at)


def _confirm(uow: UowFactory, sc: Stablecoin, m: Mint, submitted: SubmittedTx) -> TxResult:
    try:
        return sc.chain.wait(submitted, timeout=sc.settings.submitted_after_seconds)
    except TransactionNotConfirmed:
        pass

    def record(current: Mint, at: datetime) -> Mint | None:
        if current.state not in UNSETTLED:
            return None
        return current.submit(submitted.tx_hash, at)

    _transition(uow, sc, m.id, record)
    return sc.chain.wait(submitted)


def resume_mints(
    uow: UowFactory, sc: Stablecoin, now: datetime | None = None, limit: int = 100
) -> list[Mint]:
    """Drive every mint left unsettled (or failed but not refunded) for a while: after a crash,
    a node outage, or a refund the ledger refused."""
    now = now or utcnow()
    before = now - timedelta(seconds=sc.settings.mint_retry_after_seconds)
    read = uow(readonly=True)
    with read:
        stale = read.stablecoin.mints_in([*UNSETTLED, MintState.FAILED], sc.contract, before, limit)
    return [drive_mint(uow, sc, m.id) for m in stale]


def get_mint(uow: UowFactory, mint_id: str, exchange: str | None = None) -> Mint:
    """One mint; with ``exchange``, only if it is that exchange's (others look unknown)."""
    read = uow(readonly=True)
    with read:
        m = read.stablecoin.mint(mint_id)
    if m is None or (exchange is not None and m.exchange != exchange):
        raise MintNotFound(f"no mint {mint_id}")
    return m


# ------------------------------------------------------------------ reconciliation


def reconcile(
    uow: UowFactory, sc: Stablecoin, now: datetime | None = None
) -> Reconciliation | None:
    """Compare the segregated DT with totalSupply at the watcher's cursor block and record it.

    At that block every redemption is paid or held (the cursor moves in the transaction that
    pays them), so ``gap = balance - mints not on-chain by then - held redemptions - supply``;
    after a rewind, redemptions already paid for later blocks count back in.
    Returns None before the watcher has a cursor.
    """
    now = now or utcnow()
    read = uow(readonly=True, snapshot=True)
    with read:
        cursor = read.stablecoin.cursor(sc.contract)
        if cursor is None:
            return None
        block = cursor.block_number
        wallet = read.ledger.wallet(sc.segregated_wallet_id)
        unsettled = read.stablecoin.unsettled_mints(sc.contract)
        minted_later = read.stablecoin.minted_after(sc.contract, block)
        held = read.stablecoin.held_redemptions(sc.contract)
        paid_later = read.stablecoin.paid_after(sc.contract, block)
    pending = minted_later
    for m in unsettled:
        if m.state is MintState.FAILED or not sc.chain.is_request_used(
            bytes.fromhex(m.request_id), block
        ):
            pending += m.amount
    result = Reconciliation.compute(
        contract_address=sc.contract,
        checked_at=now,
        block_number=block,
        segregated_balance=wallet.posted if wallet else 0,
        pending_mints=pending,
        unpaid_redemptions=held - paid_later,
        total_supply=sc.chain.total_supply(block),
    )
    write = uow()
    with write:
        stored = write.stablecoin.add_reconciliation(result)
        write.commit()
    if not stored.ok:
        log.error(
            "reconciliation gap of %d tiyn at block %d (segregated %d, pending mints %d, "
            "held redemptions %d, totalSupply %d): new mints halted",
            stored.gap,
            block,
            stored.segregated_balance,
            stored.pending_mints,
            stored.unpaid_redemptions,
            stored.total_supply,
        )
    return stored


def latest_reconciliation(uow: UowFactory, sc: Stablecoin) -> Reconciliation | None:
    read = uow(readonly=True)
    with read:
        return read.stablecoin.latest_reconciliation(sc.contract)


def pay_held_redemption(
    uow: UowFactory,
    sc: Stablecoin,
    tx_hash: str,
    log_index: int,
    wallet_id: str,
    *,
    by: str,
    reason: str,
    now: datetime | None = None,
) -> Redemption:
    """An operator pays a held redemption into an exchange wallet, exactly once.

    The DT leaves the segregated wallet by the same deterministic transfer id the watcher
    would have used, so the payment cannot happen twice, whoever makes it.
    """
    if not reason.strip():
        raise InvalidInput("say why (reason): the decision is audited")
    write = uow()

    def work() -> Redemption:
        at = now or utcnow()
        held = write.stablecoin.redemption(tx_hash, log_index, for_update=True)
        if held is None or held.contract_address != sc.contract:
            raise RedemptionNotFound(f"no redemption {tx_hash}:{log_index}")
        wallet = write.ledger.wallet(wallet_id)
        if wallet is None or wallet.kind is not WalletKind.EXCHANGE:
            raise NotAnExchangeWallet(f"{wallet_id!r} is not an exchange wallet")
        transfer_id = redemption_transfer_id(held.tx_hash, held.log_index)
        paid = held.pay_to(wallet.id, wallet.owner, transfer_id, by, reason, at)
        ledger.execute(
            write,
            [
                redemption_payout(
                    tx_hash=held.tx_hash,
                    log_index=held.log_index,
                    amount=held.amount,
                    currency=sc.currency,
                    segregated=sc.segregated_wallet_id,
                    wallet_id=wallet.id,
                )
            ],
            at,
        )
        write.stablecoin.update_redemption(paid)
        record_redemption_event(write.outbox, paid, at)
        return paid

    paid = retrying(write, work)
    log.warning(
        "held redemption %s:%d paid into %s by key %s: %s",
        tx_hash,
        log_index,
        wallet_id,
        by,
        reason,
    )
    return paid


__all__ = [
    "UowFactory",
    "checksum_address",
    "drive_mint",
    "ensure_segregated_wallet",
    "get_mint",
    "latest_reconciliation",
    "pay_held_redemption",
    "reconcile",
    "refund_mint",
    "request_mint",
    "resume_mints",
]
