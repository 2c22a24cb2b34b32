"""parse() from several threads at once: every thread gets its own result and its own errors.

The PvP gateway parses in worker threads. A compiled XMLSchema keeps the error log of its last
run on the object, so the layer gives each thread its own compiled schemas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from lxml import etree

from gateway.iso20022 import MessageRejected, ParsedMessage, build, header_for, parse, xmlsafe
from gateway.iso20022.xmlsafe import ENVELOPE_SCHEMA, schema
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, pacs009

VALID = build(
    pacs009(3), header_for(pacs009(3), from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
)
# Each refused by the schema, each with its own reason code and location.
INVALID = [
    VALID.replace(b'Ccy="KZT"', b'Ccy="XXX"', 1),
    VALID.replace(b"<BICFI>HSBKKZKXXXX</BICFI>", b"<BICFI>HSBK</BICFI>", 1),
    VALID.replace(b"<NbOfTxs>3</NbOfTxs>", b"", 1),
    VALID.replace(b"<IntrBkSttlmDt>2025-03-14<", b"<IntrBkSttlmDt>2025-02-30<", 1),
    VALID.replace(b"<EndToEndId>", b"<Foo>x</Foo><EndToEndId>", 1),
]
Outcome = tuple[str, str | None, str] | ParsedMessage


def _outcome(data: bytes) -> Outcome:
    try:
        return parse(data, now=NOW)
    except MessageRejected as exc:
        return (exc.code, exc.xpath, exc.detail)


def _run_in_threads(work: Callable[[int], list[Outcome]], threads: int) -> list[list[Outcome]]:
    start = threading.Barrier(threads)
    results: list[list[Outcome]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return results


def test_parse_in_many_threads_gives_each_its_own_result_and_errors() -> None:
    inputs = [VALID, *INVALID]
    expected = [_outcome(data) for data in inputs]
    assert isinstance(expected[0], ParsedMessage)
    codes = {e[0] for e in expected[1:] if isinstance(e, tuple)}
    assert len(codes) >= 4, expected  # distinct errors, so a mix-up would show
    rounds = 150

    def work(i: int) -> list[Outcome]:
        # Each thread walks the inputs from a different offset: neighbours differ at each step.
        return [_outcome(inputs[(i + r) % len(inputs)]) for r in range(rounds)]

    threads = 8
    for i, got in enumerate(_run_in_threads(work, threads)):
        assert got == [expected[(i + r) % len(inputs)] for r in range(rounds)]


def test_each_thread_compiles_its_own_schema_once() -> None:
    mine = schema(ENVELOPE_SCHEMA)
    assert schema(ENVELOPE_SCHEMA) is mine
    seen: list[object] = []

    def work(_: int) -> list[Outcome]:
        seen.append(schema(ENVELOPE_SCHEMA))
        assert schema(ENVELOPE_SCHEMA) is seen[-1]
        return []

    _run_in_threads(work, 2)
    assert len({id(s) for s in [mine, *seen]}) == 3


def test_threads_compile_their_schemas_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """libxml2's schema parser is not safe against concurrent compilations (a race left a
    process unable to compile any schema again): threads starting together take turns."""
    real = etree.XMLSchema
    lock = threading.Lock()
    active = [0]
    most = [0]

    def counting(doc: etree._ElementTree) -> etree.XMLSchema:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.01)  # wide enough for the others to overlap, were they let in
            return real(doc)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(xmlsafe.etree, "XMLSchema", counting)

    def work(_: int) -> list[Outcome]:
        assert isinstance(schema(ENVELOPE_SCHEMA), real)  # a fresh thread: compiles its own
        return []

    _run_in_threads(work, 6)
    assert most[0] == 1
