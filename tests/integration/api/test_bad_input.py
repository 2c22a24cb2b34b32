"""No 500 on any input: every bad input is a 4xx problem document with a stable code, the same
on SQLite and on PostgreSQL, and changes nothing.

The cases are the ones a fuzzer finds first: NUL characters in path ids and body strings
(PostgreSQL refuses them in text), free text longer than its column (PostgreSQL refuses it,
SQLite stores it), integers beyond 64 bits in queries and paths, JSON sent as something else,
input sent without a key, and request heads that are too large or too slow.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.api.edge_support import (
    Edge,
    assert_problem,
    read_answer,
    read_until_closed,
)
from tests.support.stablecoin import EXCHANGE_WALLET

pytestmark = pytest.mark.chain

HUGE = "99999999999999999999"  # > 2**64
TX = "0x" + "ab" * 32
INT64_MAX = 2**63 - 1

Call = Callable[[Edge], httpx.Response]


def get(role: str | None, path: str, **kw: Any) -> Call:
    return lambda e: e.client(role).get(path, **kw)


def post(role: str | None, path: str, **kw: Any) -> Call:
    return lambda e: e.client(role).post(path, **kw)


def transfer(**over: Any) -> dict[str, Any]:
    return {"id": "t-bad", "debit_wallet_id": "a", "credit_wallet_id": "b", "amount": 1, **over}


def lock(**over: Any) -> dict[str, Any]:
    return {"id": "l-bad", "debit_wallet_id": "a", "credit_wallet_id": "b", "amount": 1, **over}


def mint(**over: Any) -> dict[str, Any]:
    return {
        "amount": 1_00,
        "source_wallet_id": EXCHANGE_WALLET,
        "evm_address": "0x" + "11" * 20,
        **over,
    }


def instruction(**over: Any) -> dict[str, Any]:
    side = {"currency": "KZT", "amount": 100, "account": "hsbk-dt"}
    return {
        "instruction_id": "I-bad",
        "party_bic": "HSBKKZKX",
        "counterparty_bic": "EBILAEAD",
        "sell": side,
        "buy": {**side, "currency": "AED", "account": "HSBK-AED"},
        "value_time": "2030-01-01T00:00:00Z",
        **over,
    }


def pay(**over: Any) -> dict[str, Any]:
    return {"wallet_id": EXCHANGE_WALLET, "reason": "checked by hand", **over}


BAD = "INVALID_INPUT"
MEDIA = "UNSUPPORTED_MEDIA_TYPE"
JSON_TEXT = b'{"id": "t-415", "debit_wallet_id": "a", "credit_wallet_id": "b", "amount": 1}'

CASES: dict[str, tuple[Call, int, str]] = {
    # a NUL character in a path id
    "nul_wallet_id": (get("operator", "/v1/wallets/%00"), 400, BAD),
    "nul_transfer_id": (get("operator", "/v1/transfers/%00"), 400, BAD),
    "nul_lock_id": (get("operator", "/v1/locks/%00"), 400, BAD),
    "nul_pvp_ref": (get("operator", "/v1/pvp/%00"), 400, BAD),
    "nul_pvp_ref_as_participant": (get("participant", "/v1/pvp/x%00y"), 400, BAD),
    "nul_inside_wallet_id": (get("operator", "/v1/wallets/a%00b/history"), 400, BAD),
    "nul_mint_id": (get("exchange", "/v1/stablecoin/mints/%00"), 400, BAD),
    "nul_lock_id_on_commit": (post("operator", "/v1/locks/%00/commit"), 400, BAD),
    "nul_wallet_id_on_status": (
        post("operator", "/v1/wallets/%00/status", json={"status": "frozen"}),
        400,
        BAD,
    ),
    "nul_tx_hash_on_pay": (
        post("operator", "/v1/stablecoin/redemptions/0x%00/0/pay", json=pay()),
        400,
        BAD,
    ),
    "nul_in_query": (get("operator", "/v1/wallets/a/history?cursor=%00"), 400, BAD),
    # a NUL character in a body string
    "nul_reference": (post("operator", "/v1/transfers", json=transfer(reference="r\0x")), 400, BAD),
    "nul_owner": (
        post("operator", "/v1/wallets", json={"id": "w", "kind": "participant", "owner": "o\0x"}),
        400,
        BAD,
    ),
    "nul_issuance_reference": (
        post(
            "operator",
            "/v1/issuances",
            json={"id": "i", "wallet_id": "a", "amount": 1, "reference": "\0"},
        ),
        400,
        BAD,
    ),
    "nul_lock_reference": (post("operator", "/v1/locks", json=lock(reference="x\0")), 400, BAD),
    "nul_deep_in_a_batch": (
        post(
            "operator",
            "/v1/batches",
            json={
                "operations": [
                    {"op": "transfer", **transfer()},
                    {"op": "transfer", **transfer(id="t2", reference="\0")},
                ]
            },
        ),
        400,
        BAD,
    ),
    "nul_deep_in_100000_nested_arrays": (
        post(
            "operator",
            "/v1/transfers",
            content=b'{"id": "t", "reference": '
            + b"[" * 100_000
            + rb'"\u0000"'
            + b"]" * 100_000
            + b"}",
            headers={"content-type": "application/json"},
        ),
        400,
        BAD,
    ),
    "arrays_nested_100000_deep": (
        post(
            "operator",
            "/v1/batches",
            content=b'{"operations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            headers={"content-type": "application/json"},
        ),
        400,
        BAD,
    ),
    "nul_in_a_key": (post("operator", "/v1/transfers", json={**transfer(), "x\0": 1}), 400, BAD),
    "nul_mint_wallet": (
        post(
            "exchange",
            "/v1/stablecoin/mints",
            json=mint(source_wallet_id="w\0"),
            headers={"Idempotency-Key": "nul"},
        ),
        400,
        BAD,
    ),
    "nul_instruction_account": (
        post("participant", "/v1/pvp", json=instruction(instruction_id="I\0")),
        400,
        BAD,
    ),
    "nul_resolve_reason": (
        post("operator", "/v1/pvp/x/resolve", json={"action": "release", "reason": "r\0"}),
        400,
        BAD,
    ),
    "nul_pay_reason": (
        post("operator", f"/v1/stablecoin/redemptions/{TX}/0/pay", json=pay(reason="\0")),
        400,
        BAD,
    ),
    # free text longer than its documented maximum
    "reference_201_characters": (
        post("operator", "/v1/transfers", json=transfer(reference="r" * 201)),
        400,
        BAD,
    ),
    "reference_100_kb": (
        post("operator", "/v1/transfers", json=transfer(reference="r" * 100_000)),
        400,
        BAD,
    ),
    "issuance_reference_201": (
        post(
            "operator",
            "/v1/issuances",
            json={"id": "i", "wallet_id": "a", "amount": 1, "reference": "r" * 201},
        ),
        400,
        BAD,
    ),
    "lock_reference_201": (post("operator", "/v1/locks", json=lock(reference="r" * 201)), 400, BAD),
    "batch_reference_201": (
        post(
            "operator",
            "/v1/batches",
            json={"operations": [{"op": "transfer", **transfer(reference="r" * 201)}]},
        ),
        400,
        BAD,
    ),
    "owner_201_characters": (
        post(
            "operator", "/v1/wallets", json={"id": "w", "kind": "participant", "owner": "o" * 201}
        ),
        400,
        BAD,
    ),
    "id_129_characters": (post("operator", "/v1/transfers", json=transfer(id="t" * 129)), 400, BAD),
    "mint_wallet_129": (
        post(
            "exchange",
            "/v1/stablecoin/mints",
            json=mint(source_wallet_id="w" * 129),
            headers={"Idempotency-Key": "long"},
        ),
        400,
        BAD,
    ),
    "idempotency_key_129": (
        post(
            "exchange", "/v1/stablecoin/mints", json=mint(), headers={"Idempotency-Key": "k" * 129}
        ),
        400,
        "IDEMPOTENCY_KEY_REQUIRED",
    ),
    "pay_reason_151": (
        post("operator", f"/v1/stablecoin/redemptions/{TX}/0/pay", json=pay(reason="r" * 151)),
        400,
        BAD,
    ),
    "pay_wallet_129": (
        post("operator", f"/v1/stablecoin/redemptions/{TX}/0/pay", json=pay(wallet_id="w" * 129)),
        400,
        BAD,
    ),
    "resolve_reason_1001": (
        post("operator", "/v1/pvp/x/resolve", json={"action": "release", "reason": "r" * 1001}),
        400,
        BAD,
    ),
    # integers beyond 64 bits in queries, paths and bodies
    "history_cursor_huge": (get("operator", f"/v1/wallets/a/history?cursor={HUGE}"), 400, BAD),
    "history_cursor_huge_negative": (
        get("operator", f"/v1/wallets/a/history?cursor=-{HUGE}"),
        400,
        BAD,
    ),
    "history_limit_huge": (get("operator", f"/v1/wallets/a/history?limit={HUGE}"), 400, BAD),
    "redemptions_cursor_huge": (
        get("exchange", f"/v1/stablecoin/redemptions?cursor={HUGE}"),
        400,
        BAD,
    ),
    "redemptions_cursor_huge_as_operator": (
        get("operator", f"/v1/stablecoin/redemptions?cursor={HUGE}"),
        400,
        BAD,
    ),
    "pay_log_index_huge": (
        post("operator", f"/v1/stablecoin/redemptions/{TX}/{HUGE}/pay", json=pay()),
        400,
        BAD,
    ),
    "pay_log_index_huge_negative": (
        post("operator", f"/v1/stablecoin/redemptions/{TX}/-{HUGE}/pay", json=pay()),
        400,
        BAD,
    ),
    "transfer_amount_huge": (
        post("operator", "/v1/transfers", json=transfer(amount=2**64)),
        400,
        "AM12",
    ),
    "mint_amount_huge": (
        post(
            "exchange",
            "/v1/stablecoin/mints",
            json=mint(amount=2**64),
            headers={"Idempotency-Key": "huge"},
        ),
        400,
        "AM12",
    ),
    # JSON sent as something else
    "json_as_text_plain": (
        post(
            "operator", "/v1/transfers", content=JSON_TEXT, headers={"content-type": "text/plain"}
        ),
        415,
        MEDIA,
    ),
    "json_as_xml": (
        post(
            "operator",
            "/v1/transfers",
            content=JSON_TEXT,
            headers={"content-type": "application/xml"},
        ),
        415,
        MEDIA,
    ),
    "json_as_a_form": (
        post("operator", "/v1/transfers", data={"id": "t-415", "debit_wallet_id": "a"}),
        415,
        MEDIA,
    ),
    "json_as_multipart": (
        post("operator", "/v1/transfers", files={"body": ("t.json", JSON_TEXT)}),
        415,
        MEDIA,
    ),
    "json_without_content_type": (post("operator", "/v1/transfers", content=JSON_TEXT), 415, MEDIA),
    "mint_as_text_plain": (
        post(
            "exchange",
            "/v1/stablecoin/mints",
            content=b"{}",
            headers={"content-type": "text/plain", "Idempotency-Key": "text"},
        ),
        415,
        MEDIA,
    ),
    "instruction_as_a_form": (post("participant", "/v1/pvp", data={"a": "b"}), 415, MEDIA),
    # the key before the input
    "no_key_and_malformed_json": (
        post(
            None, "/v1/transfers", content=b'{"id": ', headers={"content-type": "application/json"}
        ),
        401,
        "UNAUTHORIZED",
    ),
    "no_key_and_text_plain": (
        post(None, "/v1/transfers", content=JSON_TEXT, headers={"content-type": "text/plain"}),
        401,
        "UNAUTHORIZED",
    ),
    "no_key_and_a_bad_query": (get(None, "/v1/wallets/a/history?cursor=x"), 401, "UNAUTHORIZED"),
    "no_key_and_a_nul_path": (get(None, "/v1/wallets/%00"), 401, "UNAUTHORIZED"),
    "no_key_and_a_huge_path_integer": (
        post(None, f"/v1/stablecoin/redemptions/{TX}/{HUGE}/pay", json={}),
        401,
        "UNAUTHORIZED",
    ),
    "wrong_key_and_a_nul_body": (
        post(
            None,
            "/v1/transfers",
            json=transfer(reference="\0"),
            headers={"Authorization": "Bearer dtg_0000000000000000_nope"},
        ),
        401,
        "UNAUTHORIZED",
    ),
    "wrong_role_and_a_bad_body": (
        post("exchange", "/v1/transfers", content=b"[", headers={"content-type": "text/plain"}),
        403,
        "FORBIDDEN",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_4xx_problem_and_changes_nothing(edge: Edge, case: str) -> None:
    call, status, code = CASES[case]
    before = edge.counts()
    assert_problem(call(edge), status, code)
    assert edge.counts() == before
    assert edge.client("operator").get("/v1/ledger/invariants").json()["ok"]


# ------------------------------------------------------------------ the limits themselves


def test_free_text_at_its_maximum_is_stored_whole(edge: Edge) -> None:
    op = edge.client("operator")
    owner, reference = "o" * 200, "r" * 200
    r = op.post("/v1/wallets", json={"id": "w-200", "kind": "participant", "owner": owner})
    assert r.status_code == 201, r.text
    r = op.post("/v1/transfers", json=transfer(id="t-200", reference=reference))
    assert r.status_code == 201, r.text
    assert op.get("/v1/wallets/w-200").json()["owner"] == owner
    assert op.get("/v1/transfers/t-200").json()["reference"] == reference


def test_an_escaped_backslash_before_u0000_is_no_nul(edge: Edge) -> None:
    """``"\\\\u0000"`` in JSON is a backslash and the text ``u0000``, which any column holds."""
    op = edge.client("operator")
    r = op.post("/v1/transfers", json=transfer(id="t-backslash", reference="\\u0000"))
    assert r.status_code == 201, r.text
    assert op.get("/v1/transfers/t-backslash").json()["reference"] == "\\u0000"


def test_the_largest_64_bit_cursor_is_an_empty_page(edge: Edge) -> None:
    r = edge.client("operator").get(f"/v1/wallets/a/history?cursor={INT64_MAX}")
    assert r.status_code == 200, r.text
    assert r.json()["entries"] == []
    r = edge.client("exchange").get(f"/v1/stablecoin/redemptions?cursor={INT64_MAX}")
    assert r.status_code == 200, r.text
    assert r.json()["redemptions"] == []


def test_json_with_a_charset_is_json(edge: Edge) -> None:
    r = edge.client("operator").post(
        "/v1/transfers",
        content=JSON_TEXT.replace(b"t-415", b"t-charset"),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201, r.text


def test_the_openapi_document_declares_the_refusals(edge: Edge) -> None:
    doc = edge.client(None).get("/schema/openapi.json").json()
    post_transfer = doc["paths"]["/v1/transfers"]["post"]["responses"]
    for status in ("400", "401", "403", "409", "413", "415", "422"):
        content = post_transfer[status]["content"]
        assert content["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert set(doc["components"]["schemas"]["Problem"]["required"]) >= {"code", "status"}
    owner = doc["components"]["schemas"]["WalletCreate"]["properties"]["owner"]
    assert owner["maxLength"] == 200


# ------------------------------------------------------------------ request heads, raw sockets


def _connect(edge: Edge) -> socket.socket:
    sock = socket.create_connection(edge.address, timeout=30)
    return sock


def _head(path: str = "/health", *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(headers) + b"\r\n"


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(_head("/health", b"X-Big: " + b"a" * 17 * 1024 + b"\r\n"), id="one_header"),
        pytest.param(
            _head("/health", *(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(200))),
            id="many_headers",
        ),
        pytest.param(_head("/health?q=" + "q" * 17 * 1024), id="request_line"),
    ],
)
def test_a_request_head_over_16_kib_is_answered_431(edge: Edge, head: bytes) -> None:
    with _connect(edge) as sock:
        sock.sendall(head)
        answer = read_answer(sock)
        assert answer.status == 431
        assert answer.headers["content-type"] == "application/problem+json"
        assert b'"HEADERS_TOO_LARGE"' in answer.body
        read_until_closed(sock)


def test_a_header_that_never_ends_is_cut_off_at_16_kib(edge: Edge) -> None:
    with _connect(edge) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
        try:
            for _ in range(64):  # 64 KiB of one header, unless the server has had enough
                sock.sendall(b"a" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert b" 431 " in read_until_closed(sock).split(b"\r\n")[0]


def test_a_head_just_under_the_limit_is_served(edge: Edge) -> None:
    with _connect(edge) as sock:
        sock.sendall(_head("/health", b"X-Big: " + b"a" * 15 * 1024 + b"\r\n"))
        assert read_answer(sock).status == 200


def test_slow_clients_are_answered_408_and_disconnected(edge: Edge) -> None:
    """50 clients that send a request head a little at a time (or nothing at all) do not hold
    their connections: each is answered 408 and closed, and others are served meanwhile."""
    socks = [_connect(edge) for _ in range(50)]
    try:
        for i, sock in enumerate(socks):
            if i % 5:  # every fifth never sends a byte
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: a")
        assert edge.client(None).get("/health").status_code == 200
        answers: list[bytes] = [b""] * len(socks)

        def drain(i: int) -> None:
            answers[i] = read_until_closed(socks[i])

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(socks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), set(answers)
        assert all(b'"REQUEST_TIMEOUT"' in a for a in answers)
    finally:
        for sock in socks:
            sock.close()


def test_a_body_that_stops_coming_is_answered_408(edge: Edge) -> None:
    token = edge.tokens["operator"].encode()
    with _connect(edge) as sock:
        sock.sendall(
            b"POST /v1/transfers HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"id": '
        )
        answer = read_answer(sock)
        assert answer.status == 408 and b'"REQUEST_TIMEOUT"' in answer.body
        read_until_closed(sock)


def test_a_request_without_a_key_is_answered_before_its_body_is_sent(edge: Edge) -> None:
    with _connect(edge) as sock:
        sock.sendall(
            b"POST /v1/transfers HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        answer = read_answer(sock)
        assert answer.status == 401 and b'"UNAUTHORIZED"' in answer.body
