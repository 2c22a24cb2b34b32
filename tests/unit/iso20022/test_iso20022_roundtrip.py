"""build -> parse -> equal, for every message type, hand-written and hypothesis-generated."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.iso20022 import (
    CATALOGUE,
    Camt029,
    Camt056,
    Message,
    build,
    header_for,
    parse,
    wrap_envelope,
)
from tests.support.iso20022_samples import (
    CONNECTOR_BIC,
    GATEWAY_BIC,
    NOW,
    admi002s,
    camt029s,
    camt056s,
    messages,
    pacs002s,
    pacs004s,
    pacs009,
    pacs009s,
    pacs028s,
    samples,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _header_bics(message: Message) -> tuple[str, str]:
    if isinstance(message, Camt056 | Camt029):
        return message.assigner_bic, message.assignee_bic
    return CONNECTOR_BIC, GATEWAY_BIC


def _round_trip(message: Message) -> None:
    fr, to = _header_bics(message)
    header = header_for(message, from_bic=fr, to_bic=to, created=NOW)
    parsed = parse(build(message, header), now=NOW)
    assert parsed.message == message
    assert parsed.header == header
    bare = parse(build(message), now=NOW)
    assert bare.message == message
    assert bare.header is None


@pytest.mark.parametrize("message", samples(), ids=lambda m: m.MESSAGE_ID)
def test_hand_written_messages_round_trip(message: Message) -> None:
    _round_trip(message)


def test_every_catalogued_type_has_a_sample() -> None:
    assert {m.MESSAGE_ID for m in samples()} == set(CATALOGUE)


@pytest.mark.parametrize(
    "strategy",
    [pacs009s(), pacs002s, pacs004s, pacs028s, camt056s, camt029s, admi002s],
    ids=["pacs.009", "pacs.002", "pacs.004", "pacs.028", "camt.056", "camt.029", "admi.002"],
)
def test_generated_messages_round_trip(strategy: object) -> None:
    @FAST
    @given(strategy)
    def run(message: Message) -> None:
        _round_trip(message)

    run()


def test_hundred_transaction_pacs009_round_trips() -> None:
    message = pacs009(100)
    parsed = parse(build(message), now=NOW)
    assert parsed.message == message
    assert len(parsed.message.transactions) == 100


def test_wrap_envelope_matches_build_with_header() -> None:
    message = pacs009(2)
    header = header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
    assert wrap_envelope(header, build(message)) == build(message, header)


def test_header_for_another_message_is_refused() -> None:
    message = pacs009()
    other = samples()[1]
    header = header_for(other, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
    with pytest.raises(ValueError, match="header is for"):
        build(message, header)


@FAST
@given(messages)
def test_output_is_utf8_with_declaration(message: Message) -> None:
    raw = build(message)
    assert raw.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    raw.decode("utf-8")
