"""Mutated valid messages: never an unhandled exception; a typed message or a typed rejection."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.iso20022 import (
    Camt029,
    Camt056,
    InMemoryDuplicateCheck,
    Message,
    MessageRejected,
    ParsedMessage,
    build,
    header_for,
    parse,
)
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, samples

SEEDS = []
for _m in samples():
    _fr, _to = (
        (_m.assigner_bic, _m.assignee_bic)
        if isinstance(_m, Camt056 | Camt029)
        else (CONNECTOR_BIC, GATEWAY_BIC)
    )
    SEEDS.append(build(_m, header_for(_m, from_bic=_fr, to_bic=_to, created=NOW)))
    SEEDS.append(build(_m))

NASTY = [
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"<!DOCTYPE x>",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"]]>",
    b"<x/>",
    b"0",
    b"-1",
    b"99999999999999999999",
    b".001",
    b"Z",
    b"+14:00",
    b"T24:00:00",
    b'"',
    b"'",
    b'xmlns="urn:x"',
    b"&#0;",
    b"&#x1F600;",
    b"\r\n",
    b" ",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "swap-text"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(NASTY) | st.binary(max_size=8))
        elif op == "duplicate":
            n = draw(st.integers(1, 200))
            data[pos:pos] = data[pos : pos + n]
        else:
            close = data.find(b"</", pos)
            if close > 0:
                start = data.rfind(b">", 0, close) + 1
                data[start:close] = draw(st.sampled_from(NASTY) | st.binary(max_size=12))
        if not data:
            break
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_give_a_message_or_a_typed_rejection(data: bytes) -> None:
    rejection: MessageRejected | None = None
    try:
        result = parse(data, seen=InMemoryDuplicateCheck(), now=NOW)
    except MessageRejected as exc:
        rejection = exc
    if rejection is not None:
        assert len(rejection.code) == 4
        assert rejection.detail
    else:
        assert isinstance(result, ParsedMessage)
        message: Message = result.message
        # Whatever was accepted must be something we could have built ourselves.
        assert parse(build(message), now=NOW).message == message
