"""Strict JSON bodies.

Litestar converts request bodies in msgspec's lax mode, which turns ``"100"`` or ``100.0`` into
the integer 100. For money that is wrong: an amount must arrive as a JSON integer. This hook
decodes every JSON body once more in strict mode against the handler's body type, before the
handler runs, and refuses anything that only lax mode would accept.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler


@cache
def _decoder(handler: HTTPRouteHandler) -> msgspec.json.Decoder[Any] | None:
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return None
    return msgspec.json.Decoder(field.annotation, strict=True)


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    decoder = _decoder(handler)
    if decoder is None:
        return
    body = await request.body()
    if not body:
        return
    try:
        decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail=f"Invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ValidationException(detail=f"Malformed JSON: {exc}") from exc


__all__ = ["strict_json_body"]
