"""One collateral log entry of each kind, valid, for the entry tests to encode or spoil."""

from __future__ import annotations

from gateway.collateral.entries import ChainBurn, ChainMint, DtMovement, Statement

TX = "0x" + "ab" * 32
ADDR = "0x" + "cd" * 20

DT = DtMovement(
    transfer_id="dep-1", op="transfer", amount=1500, balance=1500, time="2026-12-06T14:44:30.123Z"
)
MINT = ChainMint(
    tx_hash=TX,
    log_index=3,
    block=12,
    to=ADDR,
    amount=1500,
    request_id="0x" + "01" * 32,
    transfer_id="dep-1",
    supply=1500,
)
BURN = ChainBurn(
    tx_hash=TX,
    log_index=4,
    block=13,
    from_=ADDR,
    amount=500,
    dt_wallet_ref="KZ-wallet-7",
    transfer_id=f"redeem-{'ab' * 32}-4",
    supply=1000,
)
STATEMENT = Statement(
    block=13,
    block_hash="0x" + "ef" * 32,
    supply=1000,
    reserve=1000,
    time="2026-12-06T14:44:31.000Z",
)
