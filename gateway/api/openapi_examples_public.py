"""The public routes in the OpenAPI document: health, readiness and the proof-of-collateral
log. See :mod:`gateway.api.openapi_examples` for what an entry holds."""

from __future__ import annotations

from gateway import __version__
from gateway.api.openapi_examples import AMOUNT, DB, TX_HASH, Documented
from gateway.collateral.service import EntryNotFound, LogNotReady, TileNotFound
from gateway.problemdoc import INVALID_INPUT, Refusal

_NOT_KEPT = Refusal(
    503,
    "COLLATERAL_NOT_KEPT",
    "No collateral log",
    "this gateway runs no stablecoin, so it keeps no collateral log",
)
_LOG = (_NOT_KEPT, LogNotReady, *DB)
_ORIGIN = "dt-gateway.example/collateral/0x5fbdb2315678afecb367f032d93f642f64180aa3"
_STATEMENT_ENTRY = {
    "block": 18,
    "block_hash": "0x8e" + "1a" * 31,
    "reserve": AMOUNT,
    "supply": AMOUNT,
    "time": "2026-01-15T09:30:05.020Z",
    "type": "statement",
    "v": 1,
}
_PROOF = [
    "q1xK3bq0bGRt6QnD0nG4s5v8rH0Uq3cV5cN1nKcWz9M=",
    "1mT2s7Yb0Kq9bq7oY5y0i2E2l4rVq2W6dQ0o3k8Qy1c=",
]
_ROOT = "7Wl0H9hMZjv3pVwJ2vQxLq1JYH7b9E6fFq8r9t0u1v2="
_CHECKPOINT = (
    f"{_ORIGIN}\n7\n{_ROOT}\ntimestamp 1768469405\n\n"
    "\u2014 dt-gateway.example/collateral Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN"
    "7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
_ENTRY = {
    "index": 6,
    "kind": "statement",
    "entry": _STATEMENT_ENTRY,
    "entry_base64": "eyJibG9jayI6MTgsLi4ufQ==",
    "leaf_hash": "d4" * 32,
    "tree_size": 7,
    "inclusion_proof": _PROOF,
}
_MINT_ENTRY = {
    "amount": AMOUNT,
    "block": 17,
    "log_index": 1,
    "request_id": "0x9a" + "00" * 31,
    "supply": AMOUNT,
    "to": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "transfer_id": "mint-3f6c1d0e9b7a4c2d8e5f6a7b8c9d0e1f",
    "tx_hash": TX_HASH,
    "type": "mint",
    "v": 1,
}
_PAGE_HTML = (
    "<!doctype html><html lang=en><head><title>Proof of collateral</title>...</head>"
    "<body>... reserve 1,500.00 KZT, supply 1,500.00 KZT, coverage 100% ...</body></html>"
)

PUBLIC: dict[str, Documented] = {
    "GET /health": Documented(responses={200: {"status": "ok", "version": __version__}}),
    "GET /ready": Documented(
        refusals=DB,
        responses={
            200: {
                "status": "ready",
                "checks": {
                    "database": {"ok": True, "detail": "at the newest schema"},
                    "chain": {"ok": True, "detail": "block 21"},
                },
                "version": __version__,
            },
            503: {
                "status": "not_ready",
                "checks": {
                    "database": {"ok": True, "detail": "at the newest schema"},
                    "chain": {"ok": False, "detail": "unreachable: ConnectError"},
                },
                "version": __version__,
            },
        },
    ),
    "GET /collateral/log/checkpoint": Documented(
        refusals=(
            INVALID_INPUT,
            Refusal(429, "RATE_LIMITED", "Too Many Requests", "retry after 1 s"),
            Refusal(405, "METHOD_NOT_ALLOWED", "Method Not Allowed", "only GET"),
            _NOT_KEPT,
            LogNotReady,
            *DB,
        ),
        responses={200: _CHECKPOINT},
    ),
    "GET /collateral/log/tile/{rest}": Documented(
        refusals=(TileNotFound, *_LOG),
        parameters={"rest": "0/000"},
    ),
    "GET /v1/collateral/keys": Documented(
        refusals=(_NOT_KEPT,),
        responses={
            200: {
                "log": {
                    "origin": _ORIGIN,
                    "vkey": "dt-gateway.example/collateral+8f1c6e2a+AbCdEfGhIjKlMnOpQrStUvWxYz0123"
                    "456789abcdefgh",
                }
            }
        },
    ),
    "GET /v1/collateral/statement": Documented(
        refusals=(EntryNotFound, *_LOG), responses={200: _ENTRY}
    ),
    "GET /v1/collateral/statements": Documented(
        refusals=_LOG,
        parameters={"limit": 100},
        responses={
            200: {
                "tree_size": 7,
                "statements": [
                    {
                        "index": 6,
                        "block": 18,
                        "block_hash": _STATEMENT_ENTRY["block_hash"],
                        "reserve": AMOUNT,
                        "supply": AMOUNT,
                        "time": "2026-01-15T09:30:05.020Z",
                    }
                ],
                "next_before": None,
            }
        },
    ),
    "GET /v1/collateral/movements": Documented(
        refusals=_LOG,
        parameters={"limit": 20},
        responses={
            200: {
                "tree_size": 7,
                "movements": [
                    {
                        "index": 5,
                        "type": "mint",
                        "amount": AMOUNT,
                        "after": AMOUNT,
                        "time": None,
                        "block": 17,
                        "transfer_id": _MINT_ENTRY["transfer_id"],
                        "tx_hash": TX_HASH,
                        "log_index": 1,
                        "entry": _MINT_ENTRY,
                    }
                ],
                "next_before": 5,
            }
        },
    ),
    "GET /v1/collateral/entries/{index}": Documented(
        refusals=(EntryNotFound, *_LOG),
        parameters={"index": 6, "size": 7},
        responses={200: {**_ENTRY, "checkpoint": _CHECKPOINT}},
    ),
    "GET /v1/collateral/entries": Documented(
        refusals=_LOG,
        parameters={"transfer_id": _MINT_ENTRY["transfer_id"], "tx_hash": TX_HASH},
        responses={
            200: {
                "entries": [
                    {
                        **_ENTRY,
                        "index": 5,
                        "kind": "mint",
                        "entry": _MINT_ENTRY,
                        "entry_base64": "eyJhbW91bnQiOjE1MDAwMCwuLi59",
                    }
                ]
            }
        },
    ),
    "GET /v1/collateral/consistency": Documented(
        refusals=_LOG,
        parameters={"first": 3, "second": 7},
        responses={
            200: {
                "first": 3,
                "second": 7,
                "first_root": "Jd1o6Vq3k2x8s0bU4n7cE2rT9mW1yZ5aQ3fH6gK8pL0=",
                "second_root": _ROOT,
                "proof": _PROOF,
            }
        },
    ),
    "GET /v1/collateral/proof/{index}": Documented(
        refusals=(EntryNotFound, *_LOG),
        parameters={"index": 6},
        responses={
            200: "c2sp.org/tlog-proof@v1\nextra eyJibG9jayI6MTgsLi4ufQ==\nindex 6\n"
            + "\n".join(_PROOF)
            + "\n\n"
            + _CHECKPOINT
        },
    ),
    "GET /collateral": Documented(responses={200: _PAGE_HTML}),
    "GET /collateral/assets/collateral.css": Documented(),
    "GET /collateral/assets/collateral.js": Documented(),
    "GET /collateral/assets/icon.svg": Documented(),
}


__all__ = ["PUBLIC"]
