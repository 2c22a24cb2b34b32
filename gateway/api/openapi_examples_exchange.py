"""The exchange's operations in the OpenAPI document: the stablecoin (mints, redemptions,
wallets, reconciliation) and webhooks (endpoints, events). See :mod:`gateway.api.openapi_examples`
for what an entry holds."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from gateway.api.exchange import (
    HeldRedemptionPay,
    MintCreate,
    MintOut,
    MintPage,
    ReconciliationOut,
    RedemptionOut,
    RedemptionPage,
    WalletList,
)
from gateway.api.openapi_examples import (
    AMOUNT,
    AT,
    EXCHANGE,
    EXCHANGE_WALLET,
    LATER,
    TX_HASH,
    Documented,
)
from gateway.api.schemas import WalletOut
from gateway.api.webhooks import (
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointWithSecret,
    EventOut,
    EventPage,
    RedeliveryOut,
)
from gateway.db import TransientDatabaseError
from gateway.ledger import errors as le
from gateway.ledger import model as lm
from gateway.stablecoin import endpoints as ep
from gateway.stablecoin import model as sm
from gateway.stablecoin.chain_errors import ChainUnavailable
from gateway.stablecoin.events import mint_payload, redemption_payload

HOLDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
"""The customer's address the exchange mints to (EIP-55)."""
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
MINT_ID = "3f6c1d0e9b7a4c2d8e5f6a7b8c9d0e1f"
REQUEST_ID = hashlib.sha256(b"dt-gateway:mint:" + MINT_ID.encode()).hexdigest()
IDEMPOTENCY_KEY = "order-4711"
ENDPOINT_ID = "we_9c2f61a4d07e35b8"
EVENT_ID = "5f0c7e1b2a3d4c5e6f708192a3b4c5d6e7f80912"
SECRET = "whsec_5F7kQ2m9XvB1rT8yN3pL6cD0sH4jW7aE2uZ9gK5oR1i"  # noqa: S105 (an example, in the document)
HOOK_URL = "https://hooks.acme.example/dt"

_DB = (TransientDatabaseError,)
_NOT_CONFIGURED = (sm.StablecoinNotConfigured,)
_NAMED = (ep.ExchangeNotNamed,)


def mint(state: sm.MintState = sm.MintState.MINTED) -> sm.Mint:
    """The example mint, in ``state``."""
    mined = state in (sm.MintState.SUBMITTED, sm.MintState.MINTED)
    return sm.Mint(
        id=MINT_ID,
        exchange=EXCHANGE,
        idempotency_key=IDEMPOTENCY_KEY,
        fingerprint=sm.fingerprint_of(AMOUNT, EXCHANGE_WALLET, HOLDER),
        source_wallet_id=EXCHANGE_WALLET,
        segregated_wallet_id="stablecoin-" + CONTRACT.lower(),
        contract_address=CONTRACT,
        evm_address=HOLDER,
        amount=AMOUNT,
        request_id=REQUEST_ID,
        state=state,
        created_at=AT,
        updated_at=LATER if state is not sm.MintState.ACCEPTED else AT,
        tx_hash=TX_HASH if mined else None,
        block_number=17 if state is sm.MintState.MINTED else None,
    )


def redemption(state: sm.RedemptionState = sm.RedemptionState.PAID) -> sm.Redemption:
    """The example redemption: 500.00 KZT burnt for the exchange's wallet."""
    paid = state is sm.RedemptionState.PAID
    return sm.Redemption(
        contract_address=CONTRACT,
        tx_hash="0x9d" + "4e" * 31,
        log_index=0,
        block_number=21,
        block_hash="0x51" + "c0" * 31,
        redeemer=HOLDER,
        amount=50_000,
        dt_wallet_ref=EXCHANGE_WALLET if paid else "acme-old",
        state=state,
        transfer_id=f"redeem-{'9d' + '4e' * 31}-0" if paid else None,
        reason=None if paid else "wallet acme-old is closed",
        created_at=LATER,
        seq=7,
        exchange=EXCHANGE,
    )


def event(event_type: str, data: dict[str, object]) -> EventOut:
    return EventOut(id=EVENT_ID, type=event_type, created_at=LATER, data=data)


_MINT_OUT = MintOut.of(mint())
_ENDPOINT = EndpointOut(ENDPOINT_ID, HOOK_URL, "production", AT, None)
_WITH_SECRET = EndpointWithSecret(ENDPOINT_ID, HOOK_URL, "production", AT, None, SECRET)

STABLECOIN: dict[str, Documented] = {
    "POST /v1/stablecoin/mints": Documented(
        refusals=(
            sm.IdempotencyKeyMissing,
            le.InvalidAmount,
            sm.InvalidEvmAddress,
            sm.ForeignWallet,
            le.WalletNotFound,
            sm.IdempotencyKeyReused,
            sm.MintingPaused,
            le.InsufficientFunds,
            le.WalletFrozen,
            le.WalletClosed,
            sm.NotAnExchangeWallet,
            sm.MintLimitExceeded,
            sm.ReceiverIsZeroAddress,
            sm.ReceiverIsContract,
            sm.AddressBlocklisted,
            sm.MintsHalted,
            *_NOT_CONFIGURED,
            ChainUnavailable,
            *_DB,
        ),
        parameters={"Idempotency-Key": IDEMPOTENCY_KEY},
        request=MintCreate(amount=AMOUNT, source_wallet_id=EXCHANGE_WALLET, evm_address=HOLDER),
        responses={201: _MINT_OUT, 200: _MINT_OUT},
    ),
    "GET /v1/stablecoin/mints": Documented(
        refusals=(sm.MintCursorUnknown, *_NAMED, *_NOT_CONFIGURED, *_DB),
        parameters={"state": "refunded", "limit": 100, "cursor": "6b08" + "0" * 28},
        responses={
            200: MintPage(
                mints=[
                    MintOut.of(
                        replace(
                            mint(sm.MintState.REFUNDED),
                            error_code="MISSING_ROLE",
                            error_detail="the operator key lacks MINTER_ROLE",
                        )
                    )
                ],
                next_cursor=None,
            )
        },
    ),
    "GET /v1/stablecoin/mints/{mint_id}": Documented(
        refusals=(sm.MintNotFound, *_DB),
        parameters={"mint_id": MINT_ID},
        responses={200: _MINT_OUT},
    ),
    "GET /v1/stablecoin/redemptions": Documented(
        refusals=(*_NAMED, *_NOT_CONFIGURED, *_DB),
        parameters={"state": "held", "cursor": 6, "limit": 100},
        responses={
            200: RedemptionPage(
                redemptions=[RedemptionOut.of(redemption(sm.RedemptionState.HELD))],
                next_cursor=None,
            )
        },
    ),
    "GET /v1/stablecoin/reconciliation": Documented(
        refusals=(*_NOT_CONFIGURED, *_DB),
        responses={
            200: ReconciliationOut(
                ok=True,
                minting_halted=False,
                seq=12,
                block_number=21,
                checked_at=LATER,
                segregated_balance=AMOUNT,
                pending_mints=0,
                unpaid_redemptions=0,
                total_supply=AMOUNT,
                gap=0,
            )
        },
    ),
    "GET /v1/stablecoin/wallets": Documented(
        refusals=(*_NAMED, *_DB),
        responses={
            200: WalletList(
                wallets=[
                    WalletOut(
                        id=EXCHANGE_WALLET,
                        kind=lm.WalletKind.EXCHANGE,
                        owner=EXCHANGE,
                        currency="KZT",
                        status=lm.WalletStatus.OPEN,
                        posted=99_850_000,
                        reserved=0,
                        available=99_850_000,
                        created_at=AT,
                    )
                ]
            )
        },
    ),
    "POST /v1/stablecoin/redemptions/{tx_hash}/{log_index}/pay": Documented(
        refusals=(
            sm.RedemptionNotFound,
            sm.RedemptionNotHeld,
            sm.NotAnExchangeWallet,
            le.WalletClosed,
            le.InsufficientFunds,
            *_NOT_CONFIGURED,
            *_DB,
        ),
        parameters={"tx_hash": "0x9d" + "4e" * 31, "log_index": 0},
        request=HeldRedemptionPay(
            wallet_id=EXCHANGE_WALLET, reason="exchange ticket 42: typo in the reference"
        ),
        responses={
            200: RedemptionOut.of(
                replace(
                    redemption(),
                    resolved_by="key_3a9e",
                    resolved_at=LATER,
                    reason="exchange ticket 42: typo in the reference",
                )
            )
        },
    ),
}

_URL_REFUSALS = (
    ep.WebhookUrlInvalid,
    ep.WebhookUrlScheme,
    ep.WebhookUrlTooLong,
    ep.WebhookUrlSelf,
    ep.WebhookAddressRefused,
    ep.WebhookUrlUnresolvable,
    ep.EndpointExists,
    ep.EndpointLimitReached,
)

WEBHOOKS: dict[str, Documented] = {
    "POST /v1/webhooks/endpoints": Documented(
        refusals=(*_URL_REFUSALS, *_NAMED, *_DB),
        request=EndpointCreate(url=HOOK_URL, description="production"),
        responses={201: _WITH_SECRET},
    ),
    "GET /v1/webhooks/endpoints": Documented(
        refusals=(*_NAMED, *_DB), responses={200: EndpointList([_ENDPOINT])}
    ),
    "GET /v1/webhooks/endpoints/{endpoint_id}": Documented(
        refusals=(ep.EndpointNotFound, *_NAMED, *_DB),
        parameters={"endpoint_id": ENDPOINT_ID},
        responses={200: _ENDPOINT},
    ),
    "DELETE /v1/webhooks/endpoints/{endpoint_id}": Documented(
        refusals=(ep.EndpointNotFound, *_NAMED, *_DB),
        parameters={"endpoint_id": ENDPOINT_ID},
    ),
    "POST /v1/webhooks/endpoints/{endpoint_id}/rotate-secret": Documented(
        refusals=(ep.EndpointNotFound, *_NAMED, *_DB),
        parameters={"endpoint_id": ENDPOINT_ID},
        responses={
            200: EndpointWithSecret(
                ENDPOINT_ID,
                HOOK_URL,
                "production",
                AT,
                LATER,
                "whsec_Q8wE3rT6yU1iO4pA7sD0fG2hJ5kL9zX3cV6bN8mM1q0",
            )
        },
    ),
    "POST /v1/webhooks/endpoints/{endpoint_id}/test": Documented(
        refusals=(ep.EndpointNotFound, *_NAMED, *_DB),
        parameters={"endpoint_id": ENDPOINT_ID},
        responses={
            202: event(
                ep.TEST_EVENT,
                {"endpoint_id": ENDPOINT_ID, "message": "a test event: verify its signature"},
            )
        },
    ),
    "GET /v1/events": Documented(
        refusals=(*_NAMED, *_DB),
        parameters={
            "type": "mint.minted",
            "created_after": "2026-01-15T00:00:00Z",
            "created_before": "2026-01-16T00:00:00Z",
            "cursor": 41,
            "limit": 100,
        },
        responses={
            200: EventPage(
                events=[event("mint.minted", mint_payload(mint()))],
                next_cursor=42,
            )
        },
    ),
    "GET /v1/events/{event_id}": Documented(
        refusals=(ep.EventNotFound, *_NAMED, *_DB),
        parameters={"event_id": EVENT_ID},
        responses={200: event("redemption.paid", redemption_payload(redemption()))},
    ),
    "POST /v1/events/{event_id}/redeliver": Documented(
        refusals=(ep.EventNotFound, ep.EndpointNotFound, *_NAMED, *_DB),
        parameters={"event_id": EVENT_ID, "endpoint_id": ENDPOINT_ID},
        responses={202: RedeliveryOut(EVENT_ID, [ENDPOINT_ID])},
    ),
}

__all__ = [
    "CONTRACT",
    "HOLDER",
    "IDEMPOTENCY_KEY",
    "STABLECOIN",
    "WEBHOOKS",
    "event",
    "mint",
    "redemption",
]
