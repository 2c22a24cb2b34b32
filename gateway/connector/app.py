"""The connector's HTTP API (litestar). Handlers parse, call :class:`Connector`, map back."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, asgi, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.types import HTTPScope, Receive, Send

from gateway.connector import apidoc
from gateway.connector.faults import FaultRule
from gateway.connector.runtime import Connector, Inbound, Unsent
from gateway.errors import HTTP_STATUS_BY_KIND, GatewayError, InvalidInput
from gateway.httpinput import check_json_body, refuse_unstorable_input
from gateway.iso20022.amounts import MAX_MINOR_UNITS
from gateway.messaging import isodoor
from gateway.messaging.queues import Batcher

log = logging.getLogger(__name__)
_JSON = msgspec.json.Encoder()


def _problem(status: int, code: str, title: str, detail: str) -> Response[Any]:
    return Response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code},
        status_code=status,
        media_type="application/problem+json",
    )


def _gateway_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, GatewayError)
    return _problem(HTTP_STATUS_BY_KIND[exc.kind], exc.code, exc.title, exc.detail)


def _http_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    return _problem(exc.status_code, "HTTP_" + str(exc.status_code), "Request refused", exc.detail)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(500, "INTERNAL_ERROR", "Internal error", "the connector failed; retry")


def _json(value: Any, status: int = 200) -> Response[Any]:
    return Response(value, status_code=status, media_type="application/json")


async def _body(request: Request[Any, Any, Any]) -> Any:
    await check_json_body(request)  # 415 unless JSON; no NUL characters (the store's text)
    try:
        return await request.json()
    except Exception:
        raise InvalidInput("the body must be JSON") from None


def create_app(connector: Connector, *, manage_lifecycle: bool = True) -> Litestar:
    """The app; with ``manage_lifecycle`` the app starts and stops the connector."""
    c = connector

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, Any]:
        return {"status": "ok", "bic": c.bic}

    @get("/v1/certificate", sync_to_thread=False)
    def certificate() -> dict[str, Any]:
        return {"bic": c.bic, "certificate_pem": c.cert_pem}

    def admin(request: Request[Any, Any, Any]) -> None:
        c.authorize_admin(request.headers.get("authorization"))

    @post("/v1/participants", opt={"key": "admin"})
    async def register(request: Request[Any, Any, Any]) -> Response[Any]:
        admin(request)
        return _json(c.register_participant(await _body(request)), 201)

    @get("/v1/participants", sync_to_thread=True)
    def list_participants() -> list[dict[str, Any]]:
        return c.list_participants()

    # Trades and instructions, which may create PvPs: on threads of their own, which send a
    # new PvP's pacs.009 themselves once the answer is on its way (Connector.handle_requests).
    requests: Batcher[Callable[[Unsent], Any], Any] = Batcher(
        c.handle_requests,
        name="connector-requests",
        threads=2,
        limit=32,
    )

    async def _request(func: Callable[..., Any], *args: Any) -> Any:
        return await requests.submit(functools.partial(func, *args))

    @post("/v1/instructions", opt={"key": "participant"})
    async def instruct(request: Request[Any, Any, Any]) -> Response[Any]:
        principal = c.authenticate(request.headers.get("authorization"))
        data = await _body(request)
        status, view = await _request(c.submit_instruction, principal, data)
        return _json(view, status)

    @post("/v1/trades", opt={"key": "admin"})
    async def trade(request: Request[Any, Any, Any]) -> Response[Any]:
        admin(request)
        data = await _body(request)
        status, view = await _request(c.create_trade, data)
        return _json(view, status)

    @post("/v1/trades/bulk", opt={"key": "admin"})
    async def trades_bulk(request: Request[Any, Any, Any]) -> Response[Any]:
        admin(request)
        data = await _body(request)
        status, created = await _request(c.create_trades, data)
        return _json(created, status)

    @get("/v1/pvp/{pvp_id:str}", sync_to_thread=True, opt={"key": "reader"})
    def pvp(pvp_id: FromPath[str], request: Request[Any, Any, Any]) -> dict[str, Any]:
        c.authorize_pvp_read(request.headers.get("authorization"), pvp_id)
        return c.pvp_view(pvp_id)

    @get("/v1/pvp/{pvp_id:str}/messages", sync_to_thread=True, opt={"key": "reader"})
    def pvp_messages(
        pvp_id: FromPath[str], request: Request[Any, Any, Any]
    ) -> list[dict[str, Any]]:
        c.authorize_pvp_read(request.headers.get("authorization"), pvp_id)
        return c.pvp_messages(pvp_id)

    # Every envelope posted while a batch is being stored waits for the next, and goes into
    # its transaction (gateway.messaging.queues.Batcher): one thread hop and one commit per batch.
    # Once the answers are on their way, the thread delivers what its commits queued.
    reception: Batcher[bytes, Inbound] = Batcher(
        c.handle_receptions,
        name="connector-reception",
        threads=c.cfg.reception_threads,
        limit=32,
    )

    @asgi(isodoor.PATH, copy_scope=False)
    async def iso_messages(scope: HTTPScope, receive: Receive, send: Send) -> None:
        raw = await isodoor.read_xml_post(scope, receive, c.settings.iso20022.max_message_bytes * 2)
        if raw is None:
            return
        result = await reception.submit(raw)
        if result.xml:
            await isodoor.answer(send, result.status, "application/xml", result.body)
        else:
            await isodoor.answer(send, result.status, "application/json", _JSON.encode(result.body))

    @post("/v1/sim/{currency:str}/accounts", opt={"key": "admin"})
    async def sim_open(currency: FromPath[str], request: Request[Any, Any, Any]) -> Response[Any]:
        admin(request)
        data = await _body(request)
        if not isinstance(data, dict) or not isinstance(data.get("account"), str):
            raise InvalidInput("body: {account, amount}")
        amount = data.get("amount", 0)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount > MAX_MINOR_UNITS:
            raise InvalidInput(f"amount: an integer of minor units, at most {MAX_MINOR_UNITS}")
        await _run(c.sim.issue, currency, data["account"], amount)
        return _json(c.sim.balance(currency, data["account"]), 201)

    @get("/v1/sim/{currency:str}/accounts/{account:str}", sync_to_thread=True)
    def sim_balance(currency: FromPath[str], account: FromPath[str]) -> dict[str, Any]:
        return c.sim.balance(currency, account)

    @get("/v1/sim/{currency:str}/check", sync_to_thread=True)
    def sim_check(currency: FromPath[str]) -> dict[str, Any]:
        return c.sim.check(currency)

    @post("/v1/faults", opt={"key": "admin"})
    async def add_fault(request: Request[Any, Any, Any]) -> Response[Any]:
        admin(request)
        data = await _body(request)
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        allowed = {
            "kind",
            "probability",
            "pvp_id",
            "message_type",
            "destination_bic",
            "count",
            "delay_ms",
            "reason",
            "step",
        }
        unknown = set(data) - allowed
        if unknown:
            raise InvalidInput(f"unknown fields: {sorted(unknown)}")
        try:
            rule = FaultRule(**data)
        except TypeError as exc:
            raise InvalidInput(str(exc)) from None
        return _json(c.faults.add(rule).to_json(), 201)

    @get("/v1/faults", sync_to_thread=False)
    def list_faults() -> list[dict[str, Any]]:
        return [r.to_json() for r in c.faults.rules()]

    @delete("/v1/faults", status_code=204, sync_to_thread=False, opt={"key": "admin"})
    def clear_faults(request: Request[Any, Any, Any]) -> None:
        admin(request)
        c.faults.clear()

    app = Litestar(
        route_handlers=[
            health,
            certificate,
            register,
            list_participants,
            instruct,
            trade,
            trades_bulk,
            pvp,
            pvp_messages,
            iso_messages,
            sim_open,
            sim_balance,
            sim_check,
            add_fault,
            list_faults,
            clear_faults,
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        on_startup=[lambda: c.start(), reception.start, requests.start] if manage_lifecycle else [],
        on_shutdown=[reception.stop, requests.stop, lambda: c.stop()]
        if manage_lifecycle
        else [reception.stop, requests.stop],
        request_max_body_size=c.settings.iso20022.max_message_bytes * 2,
        guards=[refuse_unstorable_input],  # NUL characters, integers beyond 64 bits
        debug=False,
        # Logging is the process's business, not the app's (litestar's default logs every
        # httpx request at INFO).
        logging_config=None,
    )
    isodoor.document(app)  # an ASGI handler: litestar leaves it out of the schema
    apidoc.document(app)  # keys, the bodies the handlers read, every route's refusals
    return app


async def _run(func: Any, *args: Any) -> Any:
    """Blocking database work off the event loop."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(func, *args)


__all__ = ["create_app"]
