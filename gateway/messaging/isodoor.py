"""``POST /iso20022/messages`` as a bare ASGI handler, for the gateway and the connector mock.

Every message of every PvP is posted to one of these two doors. Litestar's request and
response machinery (kwargs, Request, Response, serialisation) cost ~55 µs of CPU per post
there, more than the rest of the HTTP exchange; these helpers read the body, refuse what is
not a posted XML body and send the answer without it. Exceptions raised here are still
turned into problem documents by each app's exception handlers. Litestar leaves ASGI
handlers out of the OpenAPI document it builds: :func:`document` puts the door back in.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.exceptions import HTTPException, MethodNotAllowedException
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    RequestBody,
    Schema,
)
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Send,
)

PATH = "/iso20022/messages"
_XML_TYPES = (b"application/xml", b"text/xml")


async def read_xml_post(scope: HTTPScope, receive: Receive, limit: int) -> bytes | None:
    """The body of a POST of XML: 405 for another method, 415 for another content type, 413
    over ``limit`` bytes. None if the client went away before it was all sent."""
    if scope.get("method") != "POST":
        raise MethodNotAllowedException(headers={"Allow": "POST"})
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value.split(b";")[0].strip().lower()
            if ctype and ctype not in _XML_TYPES:
                raise HTTPException(status_code=415, detail="Content-Type must be application/xml")
        elif name == b"content-length" and value.isdigit() and int(value) > limit:
            raise HTTPException(status_code=413, detail=f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"the body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def answer(
    send: Send,
    status: int,
    media_type: str,
    body: bytes,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", media_type.encode("ascii")),
            (b"content-length", str(len(body)).encode("ascii")),
            *headers,
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)


_XML = {"application/xml": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))}

DOC = PathItem(
    post=Operation(
        tags=["partner"],
        summary="Receive a signed ISO 20022 envelope",
        description=(
            "Raw `application/xml` body. 202 with a technical acknowledgement once the message "
            "is stored; 400 with a signed admi.002 when it is refused. Business answers follow "
            "asynchronously as new messages to the sender."
        ),
        operation_id="Iso20022MessagesReceive",
        security=[],
        request_body=RequestBody(content=_XML, required=True),
        responses={
            "202": OpenAPIResponse(
                description="Stored: the technical acknowledgement",
                content={
                    "application/json": OpenAPIMediaType(
                        schema=Schema(
                            type=OpenAPIType.OBJECT,
                            properties={
                                "msg_id": Schema(type=OpenAPIType.STRING),
                                "sha256": Schema(type=OpenAPIType.STRING),
                                "duplicate": Schema(type=OpenAPIType.BOOLEAN),
                            },
                            required=["msg_id", "sha256", "duplicate"],
                        )
                    )
                },
            ),
            "400": OpenAPIResponse(description="Refused: a signed admi.002", content=_XML),
            "405": OpenAPIResponse(description="Only POST"),
            "413": OpenAPIResponse(description="The body is too large"),
            "415": OpenAPIResponse(description="The body is not application/xml"),
        },
    )
)


def document(app: Litestar) -> None:
    """Add the door to ``app``'s OpenAPI document (built here, then cached by litestar)."""
    schema = app.openapi_schema
    schema.paths = {**(schema.paths or {}), PATH: DOC}


__all__ = ["DOC", "PATH", "answer", "document", "read_xml_post"]
