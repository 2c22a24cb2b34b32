"""The message catalogue: message definition id -> namespace, schema, model, writer, reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from gateway.iso20022 import build, read
from gateway.iso20022.models import (
    Admi002,
    Camt029,
    Camt056,
    Message,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
)
from gateway.iso20022.xmlsafe import ISO_NS_PREFIX


@dataclass(frozen=True, slots=True)
class MessageSpec:
    message_id: str
    namespace: str
    document_tag: str
    schema_file: str
    model: type[Any]
    writer: Callable[..., str]
    reader: Callable[[etree._Element], Message]
    purpose: str


def _spec(model: type[Any], purpose: str) -> MessageSpec:
    mid: str = model.MESSAGE_ID
    ns = ISO_NS_PREFIX + mid
    return MessageSpec(
        message_id=mid,
        namespace=ns,
        document_tag=f"{{{ns}}}Document",
        schema_file=f"{mid}.xsd",
        model=model,
        writer=build.WRITERS[mid],
        reader=read.READERS[mid],
        purpose=purpose,
    )


CATALOGUE: Final[dict[str, MessageSpec]] = {
    s.message_id: s
    for s in (
        _spec(Pacs009, "PvP leg instruction (connector -> network)"),
        _spec(Pacs002, "status: ACSP locked, ACSC settled, RJCT rejected; carries the fulfilment"),
        _spec(Pacs004, "payment return"),
        _spec(Pacs028, "status request for a leg; answered by pacs.002"),
        _spec(Camt056, "cancellation request (PvP abort)"),
        _spec(Camt029, "resolution of investigation: CNCL cancelled, RJCR refused"),
        _spec(Admi002, "message reject"),
    )
}

BY_DOCUMENT_TAG: Final[dict[str, MessageSpec]] = {s.document_tag: s for s in CATALOGUE.values()}

__all__ = ["BY_DOCUMENT_TAG", "CATALOGUE", "MessageSpec"]
