"""The public collateral routes over real HTTP: the C2SP layout with its cache headers, the JSON
proofs, and hostile input (bad paths, out-of-range and huge numbers, floods) answered with a
clear 4xx and bounded work."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.collateral import service, tlog
from gateway.collateral.note import Checkpoint, Signer, Verifier, open_note
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import load_settings
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.serving import serve_in_thread

SEG = "segregated-http"
ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000bb"


def _populate(engine: Engine, clog: CollateralLog, n: int) -> None:
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="stablecoin"),
            OpenWallet(id="x", kind=WalletKind.EXCHANGE, owner="exchange"),
            Issue(id="fund", wallet_id="x", amount=10**9),
            *(
                MakeTransfer(id=f"m-{i}", debit_wallet_id="x", credit_wallet_id=SEG, amount=5)
                for i in range(n)
            ),
        ],
    )

    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    while service.integrate(uow, clog).added:
        pass


@pytest.fixture
def served(engine: Engine) -> Iterator[tuple[httpx.Client, CollateralLog]]:
    settings = load_settings(
        environ={}, collateral={"rate_per_second": 1000, "rate_burst": 100_000}
    )
    clog = CollateralLog(SEG, ORIGIN, Signer.generate(ORIGIN), settings.collateral)
    _populate(engine, clog, 300)
    with (
        serve_in_thread(create_app(settings, engine, collateral=clog)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client, clog


def test_the_tiled_log_is_served_as_c2sp_says(served: tuple[httpx.Client, CollateralLog]) -> None:
    client, clog = served
    resp = client.get("/collateral/log/checkpoint")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["cache-control"] == "public, max-age=1"
    cp = Checkpoint.parse(open_note(resp.text, [Verifier.from_vkey(clog.vkey)]).text)
    assert cp.size == 300
    full = client.get("/collateral/log/tile/0/000")
    assert full.status_code == 200 and len(full.content) == 256 * 32
    assert "immutable" in full.headers["cache-control"]
    part = client.get("/collateral/log/tile/0/001.p/44")
    assert len(part.content) == 44 * 32 and "immutable" not in part.headers["cache-control"]
    bundle = client.get("/collateral/log/tile/entries/000").content
    leaves = [tlog.leaf_hash(e) for e in tlog.decode_bundle(bundle)]
    assert b"".join(leaves) == full.content
    assert client.get("/v1/collateral/keys").json() == {
        "log": {"origin": ORIGIN, "vkey": clog.vkey}
    }


def test_json_proofs_verify_against_the_signed_root(
    served: tuple[httpx.Client, CollateralLog],
) -> None:
    client, clog = served
    cp = Checkpoint.parse(
        open_note(
            client.get("/collateral/log/checkpoint").text, [Verifier.from_vkey(clog.vkey)]
        ).text
    )
    got = client.get("/v1/collateral/entries/257").json()
    proof = [base64.b64decode(h) for h in got["inclusion_proof"]]
    tlog.verify_inclusion(257, cp.size, bytes.fromhex(got["leaf_hash"]), proof, cp.root)
    assert got["entry"]["transfer_id"] == "m-257" and got["entry"]["balance"] == 258 * 5
    found = client.get("/v1/collateral/entries", params={"transfer_id": "m-3"}).json()
    assert [e["index"] for e in found["entries"]] == [3]
    c = client.get("/v1/collateral/consistency", params={"first": 100}).json()
    tlog.verify_consistency(
        100,
        300,
        [base64.b64decode(h) for h in c["proof"]],
        base64.b64decode(c["first_root"]),
        cp.root,
    )
    text = client.get("/v1/collateral/proof/5").text
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/collateral/log/tile/0/0", 400),  # not three digits
        ("/collateral/log/tile/0/x000", 400),  # x on the last element
        ("/collateral/log/tile/64/000", 400),  # no such level
        ("/collateral/log/tile/0/000.p/0", 400),
        ("/collateral/log/tile/0/000.p/256", 400),
        ("/collateral/log/tile/0/001", 404),  # beyond the tree
        ("/collateral/log/tile/entries/x999/x999/x999/x999/x999/x999/999", 400),
        ("/collateral/log/tile/1/000", 404),
        ("/collateral/log/tile/../../etc/passwd", 404),  # the client resolves the dots
        ("/v1/collateral/entries/300", 404),
        ("/v1/collateral/entries/-1", 400),
        ("/v1/collateral/entries/99999999999999999999999", 400),
        ("/v1/collateral/entries/1?size=301", 400),
        ("/v1/collateral/entries/1?size=0", 400),
        ("/v1/collateral/consistency?first=0", 400),
        ("/v1/collateral/consistency?first=301", 400),
        ("/v1/collateral/consistency?first=5&second=99999999999999999999", 400),
        ("/v1/collateral/entries", 400),  # neither transfer_id nor tx_hash
        ("/v1/collateral/entries?transfer_id=a&tx_hash=0x1", 400),
        ("/v1/collateral/proof/300", 404),
    ],
)
def test_bad_input_is_a_clear_4xx(
    served: tuple[httpx.Client, CollateralLog], path: str, status: int
) -> None:
    client, _ = served
    resp = client.get(path)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["code"]


def test_a_flood_from_one_address_is_limited_with_retry_after(engine: Engine) -> None:
    settings = load_settings(environ={}, collateral={"rate_per_second": 1, "rate_burst": 5})
    clog = CollateralLog(SEG, ORIGIN, Signer.generate(ORIGIN), settings.collateral)
    _populate(engine, clog, 3)
    with (
        serve_in_thread(create_app(settings, engine, collateral=clog)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        statuses = [client.get("/collateral/log/checkpoint").status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = client.get("/v1/collateral/entries/0")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["code"] == "RATE_LIMITED"
        assert client.get("/health").status_code in (200, 503)  # other routes are not limited


def test_a_gateway_without_a_stablecoin_says_it_keeps_no_log(engine: Engine) -> None:
    settings = load_settings(environ={})
    with (
        serve_in_thread(create_app(settings, engine)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        for path in ("/collateral/log/checkpoint", "/v1/collateral/statement"):
            resp = client.get(path)
            assert resp.status_code == 503 and resp.json()["code"] == "COLLATERAL_NOT_KEPT"
