"""Exchange API: mint stablecoins against DT, see its DT wallets, follow its mints and
redemptions, see reconciliation. Parse, call the stablecoin service, map to a schema; no logic.

An exchange key (role ``exchange``) acts for the exchange named by its ``subject``: the DT
wallets it may mint from, and sees, are the ``exchange`` wallets whose owner is that subject.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter, QueryParameter
from msgspec import Meta, Struct

from gateway.api.deps import role_guard
from gateway.api.schemas import TIYN_EXAMPLE, TiynAmount, WalletOut
from gateway.auth import Principal, Role
from gateway.stablecoin import selfservice, service
from gateway.stablecoin.model import (
    Mint,
    MintRequest,
    MintState,
    Reconciliation,
    Redemption,
    RedemptionState,
    StablecoinNotConfigured,
)
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

exchange_only = {"principal": Provide(role_guard(Role.EXCHANGE), sync_to_thread=False)}
exchange_or_operator = {
    "principal": Provide(role_guard(Role.EXCHANGE, Role.OPERATOR), sync_to_thread=False)
}


class MintCreate(Struct, forbid_unknown_fields=True):
    amount: Annotated[
        int,
        Meta(
            description=(
                "Tiyn to mint, the integer minor unit (1 KZT = 100 tiyn = 100 tokens): "
                "150000 mints 1,500.00 KZT of tokens; 1000.50 is refused"
            ),
            examples=[TIYN_EXAMPLE],
        ),
    ]
    source_wallet_id: Annotated[
        str, Meta(max_length=128, description="The exchange's DT wallet to debit")
    ]
    evm_address: Annotated[str, Meta(description="Recipient, 0x + 40 hex (EIP-55 if mixed case)")]


class MintOut(Struct, frozen=True, tag_field="object", tag="stablecoin_mint"):
    id: str
    state: MintState
    amount: TiynAmount
    source_wallet_id: str
    evm_address: str
    contract_address: str
    request_id: str
    tx_hash: str | None
    block_number: int | None
    error_code: str | None
    error_detail: str | None
    idempotency_key: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, m: Mint) -> MintOut:
        return cls(
            id=m.id,
            state=m.state,
            amount=m.amount,
            source_wallet_id=m.source_wallet_id,
            evm_address=m.evm_address,
            contract_address=m.contract_address,
            request_id="0x" + m.request_id,
            tx_hash=m.tx_hash,
            block_number=m.block_number,
            error_code=m.error_code,
            error_detail=m.error_detail,
            idempotency_key=m.idempotency_key,
            created_at=m.created_at,
            updated_at=m.updated_at,
        )


class RedemptionOut(Struct, frozen=True, tag_field="object", tag="stablecoin_redemption"):
    seq: int | None
    tx_hash: str
    log_index: int
    block_number: int
    redeemer: str
    amount: TiynAmount
    dt_wallet_ref: str
    state: RedemptionState
    transfer_id: str | None
    reason: str | None
    created_at: datetime
    resolved_by: str | None = None
    resolved_at: datetime | None = None

    @classmethod
    def of(cls, r: Redemption) -> RedemptionOut:
        return cls(
            seq=r.seq,
            tx_hash=r.tx_hash,
            log_index=r.log_index,
            block_number=r.block_number,
            redeemer=r.redeemer,
            amount=r.amount,
            dt_wallet_ref=r.dt_wallet_ref,
            state=r.state,
            transfer_id=r.transfer_id,
            reason=r.reason,
            created_at=r.created_at,
            resolved_by=r.resolved_by,
            resolved_at=r.resolved_at,
        )


class HeldRedemptionPay(Struct, forbid_unknown_fields=True):
    wallet_id: Annotated[
        str, Meta(max_length=128, description="The exchange DT wallet to pay into")
    ]
    reason: Annotated[str, Meta(min_length=1, max_length=150, description="Why (audited)")]


class RedemptionPage(Struct, frozen=True):
    redemptions: list[RedemptionOut]
    next_cursor: Annotated[int | None, Meta(description="Pass as cursor for the next page")]


class MintPage(Struct, frozen=True):
    mints: list[MintOut]
    next_cursor: Annotated[str | None, Meta(description="Pass as cursor for the next page")]


class WalletList(Struct, frozen=True):
    wallets: Annotated[
        list[WalletOut],
        Meta(
            description=(
                "posted: the DT in the wallet, in tiyn; reserved: the part held by pending "
                "locks; available = posted - reserved, what a mint may use"
            )
        ),
    ]


class ReconciliationOut(Struct, frozen=True, tag_field="object", tag="reconciliation"):
    ok: bool
    minting_halted: bool
    seq: int | None = None
    block_number: int | None = None
    checked_at: datetime | None = None
    segregated_balance: TiynAmount | None = None
    pending_mints: TiynAmount | None = None
    unpaid_redemptions: TiynAmount | None = None
    total_supply: TiynAmount | None = None
    gap: TiynAmount | None = None

    @classmethod
    def of(cls, r: Reconciliation | None) -> ReconciliationOut:
        if r is None:
            return cls(ok=True, minting_halted=False)
        return cls(
            ok=r.ok,
            minting_halted=not r.ok,
            seq=r.seq,
            block_number=r.block_number,
            checked_at=r.checked_at,
            segregated_balance=r.segregated_balance,
            pending_mints=r.pending_mints,
            unpaid_redemptions=r.unpaid_redemptions,
            total_supply=r.total_supply,
            gap=r.gap,
        )


def _stablecoin(state: State) -> Stablecoin:
    sc: Stablecoin | None = state.get("stablecoin")
    if sc is None:
        raise StablecoinNotConfigured("the stablecoin is not configured on this gateway")
    return sc


def _uow(state: State) -> service.UowFactory:
    return partial(StablecoinUnitOfWork, state.engine)


class MintController(Controller):
    path = "/v1/stablecoin/mints"
    tags = ["stablecoin"]
    dependencies = exchange_only

    @post(
        "/",
        sync_to_thread=True,
        summary="Mint stablecoins against DT (Idempotency-Key required)",
        description=(
            "Moves the DT from the exchange's wallet into the segregated collateral wallet, "
            "then mints on-chain. 201: new mint (state minted, or accepted/submitted while the "
            "chain is slow; follow GET). 200: replay of the same Idempotency-Key and body. "
            "Every refusal below is answered before any DT moves: nothing moved, no event. "
            "A mint the contract still refuses later (paused or blocklisted meanwhile) is "
            "refunded (state refunded)."
        ),
        status_code=201,
        responses={200: ResponseSpec(MintOut, description="A replay: the mint already made")},
    )
    def create(
        self,
        state: State,
        data: JSONBody[MintCreate],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                required=True,
                description=(
                    "Required: 1 to 128 visible ASCII characters, yours, unique per mint. "
                    "The same key and body again answers the same mint (200); the same key "
                    "with another body is refused (409 DU01). Missing: 400 "
                    "IDEMPOTENCY_KEY_REQUIRED"
                ),
            ),
        ] = None,
    ) -> Response[MintOut]:
        req = MintRequest(
            exchange=principal.subject,
            idempotency_key=idempotency_key or "",
            amount=data.amount,
            source_wallet_id=data.source_wallet_id,
            evm_address=data.evm_address,
        )
        mint, created = service.request_mint(_uow(state), _stablecoin(state), req)
        return Response(MintOut.of(mint), status_code=201 if created else 200)

    @get(
        "/",
        sync_to_thread=True,
        summary="This exchange's mints, oldest first, in every state or one",
    )
    def list_mints(
        self,
        state: State,
        principal: NamedDependency[Principal],
        mint_state: Annotated[
            MintState | None, QueryParameter(name="state", description="Only mints in this state")
        ] = None,
        cursor: Annotated[
            str | None, Parameter(max_length=64, description="next_cursor of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> MintPage:
        page, next_cursor = selfservice.list_mints(
            _uow(state), _stablecoin(state), principal.subject, mint_state, cursor, limit
        )
        return MintPage([MintOut.of(m) for m in page], next_cursor)

    @get("/{mint_id:str}", sync_to_thread=True, summary="One mint of this exchange")
    def get_mint(
        self, state: State, mint_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> MintOut:
        return MintOut.of(service.get_mint(_uow(state), mint_id, exchange=principal.subject))


class RedemptionController(Controller):
    path = "/v1/stablecoin"
    tags = ["stablecoin"]
    dependencies = exchange_or_operator

    @get(
        "/redemptions",
        sync_to_thread=True,
        summary="Redemptions paid (or held) to this exchange's wallets, oldest first",
        description=(
            "An exchange key sees the redemptions whose reference names one of its wallets, "
            "held ones included (reason says why); an operator key sees all, those whose "
            "reference names no exchange wallet too."
        ),
    )
    def redemptions(
        self,
        state: State,
        principal: NamedDependency[Principal],
        redemption_state: Annotated[
            RedemptionState | None,
            QueryParameter(name="state", description="Only redemptions in this state"),
        ] = None,
        cursor: Annotated[int | None, Parameter(ge=0)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> RedemptionPage:
        exchange = None if principal.role is Role.OPERATOR else principal.subject
        page, next_cursor = selfservice.list_redemptions(
            _uow(state), _stablecoin(state), exchange, redemption_state, cursor, limit
        )
        return RedemptionPage([RedemptionOut.of(r) for r in page], next_cursor)

    @get(
        "/reconciliation",
        sync_to_thread=True,
        summary="The latest reconciliation of segregated DT against totalSupply",
    )
    def reconciliation(
        self, state: State, principal: NamedDependency[Principal]
    ) -> ReconciliationOut:
        return ReconciliationOut.of(service.latest_reconciliation(_uow(state), _stablecoin(state)))


class ExchangeWalletController(Controller):
    path = "/v1/stablecoin/wallets"
    tags = ["stablecoin"]
    dependencies = exchange_only

    @get(
        "/",
        sync_to_thread=True,
        summary="This exchange's DT wallets, with their balances and locked amounts",
        description=(
            "The wallets of kind exchange whose owner is this key's subject: the ones it may "
            "mint from and name in a redemption. An operator opens and funds them."
        ),
    )
    def wallets(self, state: State, principal: NamedDependency[Principal]) -> WalletList:
        found = selfservice.wallets(_uow(state), principal.subject)
        return WalletList([WalletOut.of(w) for w in found])


class HeldRedemptionController(Controller):
    path = "/v1/stablecoin/redemptions"
    tags = ["stablecoin"]
    dependencies = {"principal": Provide(role_guard(Role.OPERATOR), sync_to_thread=False)}

    @post(
        "/{tx_hash:str}/{log_index:int}/pay",
        status_code=200,
        sync_to_thread=True,
        summary="Operator: pay a held redemption into an exchange wallet (audited, once)",
    )
    def pay(
        self,
        state: State,
        tx_hash: FromPath[str],
        log_index: FromPath[int],
        data: JSONBody[HeldRedemptionPay],
        principal: NamedDependency[Principal],
    ) -> RedemptionOut:
        paid = service.pay_held_redemption(
            _uow(state),
            _stablecoin(state),
            tx_hash,
            log_index,
            data.wallet_id,
            by=principal.key_id,
            reason=data.reason,
        )
        return RedemptionOut.of(paid)


ROUTES = [MintController, RedemptionController, ExchangeWalletController, HeldRedemptionController]

__all__ = [
    "ROUTES",
    "MintCreate",
    "MintOut",
    "MintPage",
    "ReconciliationOut",
    "RedemptionOut",
    "RedemptionPage",
    "WalletList",
]
