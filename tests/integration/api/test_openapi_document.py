"""The OpenAPI document the gateway serves (``/schema/openapi.json``) is complete: walked
operation by operation, it fails on any that lacks what an integrator needs.

- a request example (body, and every path or required parameter) and an example of every
  success answer, each valid against its own schema in the document;
- every refusal as an RFC 9457 problem (``Problem``), with the codes it can carry, one example
  per code, each a problem of that status;
- ``Idempotency-Key`` required wherever it is taken;
- the webhooks (OpenAPI 3.1 ``webhooks``): every event type, its payload's schema and an
  example delivery whose ``X-DT-Signature`` verifies under the example secret;
- every amount an integer in tiyn (or the currency's minor units), with an example.

Answers that are documents for people or machines rather than data (an HTML page, a stylesheet,
a script, an image, binary tiles) need no example. The document does not depend on the
database, so it is read from one gateway on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from gateway.api import openapi_examples_exchange as x
from gateway.api import openapi_webhooks as hooks
from gateway.api.app import create_app
from gateway.api.openapi import OPERATIONS
from gateway.api.problems import TYPE_BASE
from gateway.config import load_settings
from gateway.messaging.serving import serve_in_thread
from gateway.stablecoin.endpoints import TEST_EVENT
from gateway.stablecoin.events import mint_payload, redemption_payload
from gateway.stablecoin.model import MintState, RedemptionState
from gateway.stablecoin.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from tests.support.databases import migrated_engine

METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM_JSON = "application/problem+json"
NEEDS_NO_EXAMPLE = ("text/html", "text/css", "text/javascript", "image/", "application/octet")
"""Media types of answers that are documents or binary, not data."""
AMOUNT_NAMES = frozenset(
    {
        "amount",
        "posted",
        "reserved",
        "available",
        "reserve",
        "supply",
        "total_supply",
        "segregated_balance",
        "posted_delta",
        "reserved_delta",
        "posted_after",
        "reserved_after",
        "total_posted",
        "issued_minus_redeemed",
        "gap",
    }
)
"""Properties that are amounts of money wherever they appear."""


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'gateway.db'}"
    engine = migrated_engine(url)
    settings = load_settings(environ={}, database={"url": url})
    with serve_in_thread(create_app(settings, engine)) as base:
        answer = httpx.get(f"{base}/schema/openapi.json", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/vnd.oai.openapi+json")
        yield answer.json()
    engine.dispose()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator of ``schema``, its ``#/components/...`` references resolved in ``doc``."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def invalid(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    return [e.message for e in validator(doc, schema).iter_errors(value)]


def examples_of(media: dict[str, Any]) -> list[Any]:
    found = [e["value"] for e in (media.get("examples") or {}).values()]
    return found + ([media["example"]] if "example" in media else [])


def needs_example(media_type: str) -> bool:
    return not media_type.startswith(NEEDS_NO_EXAMPLE)


def is_json(media_type: str) -> bool:
    return media_type.split(";")[0].strip().endswith("json")


def test_every_operation_is_catalogued(document: dict[str, Any]) -> None:
    missing = [name for name, _ in operations(document) if name not in OPERATIONS]
    assert not missing, (
        "operations with no entry in gateway/api/openapi_examples*.py (examples, refusals): "
        f"{missing}"
    )


def test_every_operation_has_request_examples_valid_against_their_schemas(
    document: dict[str, Any],
) -> None:
    faults: list[str] = []
    for name, op in operations(document):
        body = op.get("requestBody")
        for media_type, media in (body or {}).get("content", {}).items():
            found = examples_of(media)
            if not found:
                faults.append(f"{name}: no example of its {media_type} body")
            for value in found if is_json(media_type) else ():
                faults += [
                    f"{name} body example: {m}" for m in invalid(document, media["schema"], value)
                ]
        for p in op.get("parameters", []):
            found = examples_of(p)
            if (p["in"] == "path" or p.get("required")) and not found:
                faults.append(f"{name}: no example of {p['in']} parameter {p['name']}")
            for value in found:
                faults += [
                    f"{name} parameter {p['name']} example {value!r}: {m}"
                    for m in invalid(document, p["schema"], value)
                ]
    assert not faults, "\n".join(faults)


def test_every_success_answer_has_an_example_valid_against_its_schema(
    document: dict[str, Any],
) -> None:
    faults: list[str] = []
    for name, op in operations(document):
        answers = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert answers, f"{name}: no success answer documented"
        for status, answer in answers.items():
            for media_type, media in (answer.get("content") or {}).items():
                found = examples_of(media)
                if needs_example(media_type) and not found:
                    faults.append(f"{name} {status}: no example of its {media_type} answer")
                for value in found if is_json(media_type) and "schema" in media else ():
                    faults += [
                        f"{name} {status} example: {m}"
                        for m in invalid(document, media["schema"], value)
                    ]
    assert not faults, "\n".join(faults)


def test_every_refusal_is_a_problem_with_its_codes_and_an_example_of_each(
    document: dict[str, Any],
) -> None:
    problem = {"$ref": "#/components/schemas/Problem"}
    faults: list[str] = []
    for name, op in operations(document):
        refusals = {s: r for s, r in op["responses"].items() if s[:1] in "45"}
        assert "400" in refusals, f"{name}: its 400 is not documented"
        for status, answer in refusals.items():
            content = answer.get("content") or {}
            if PROBLEM_JSON not in content:
                # An answer of its own (the door's signed admi.002, /ready's body, a page).
                for media_type, media in content.items():
                    if needs_example(media_type) and not examples_of(media):
                        faults.append(f"{name} {status}: no example of its {media_type} answer")
                if not content:
                    faults.append(f"{name} {status}: no content (should be a problem)")
                continue
            media = content[PROBLEM_JSON]
            if media.get("schema") != problem:
                faults.append(f"{name} {status}: not the Problem schema: {media.get('schema')}")
            codes = media.get("examples") or {}
            if not codes:
                faults.append(f"{name} {status}: no codes")
            for code, ex in codes.items():
                value = ex["value"]
                faults += [
                    f"{name} {status} {code}: {m}" for m in invalid(document, problem, value)
                ]
                if value.get("code") != code or value.get("status") != int(status):
                    faults.append(f"{name} {status}: example {code} is {value}")
                if value.get("type") != TYPE_BASE + code.lower():
                    faults.append(f"{name} {status} {code}: type {value.get('type')}")
                if f"`{code}`" not in answer["description"]:
                    faults.append(f"{name} {status}: {code} not named in its description")
    assert not faults, "\n".join(faults)


def test_operations_with_a_key_document_401_and_403(document: dict[str, Any]) -> None:
    for name, op in operations(document):
        if op.get("security") not in ([], [{}]):  # [{}]: no requirement, as []
            assert {"401", "403"} <= set(op["responses"]), name


def test_idempotency_key_is_required_wherever_it_is_taken(document: dict[str, Any]) -> None:
    taken = [
        (name, p)
        for name, op in operations(document)
        for p in op.get("parameters", [])
        if p["name"].lower() == "idempotency-key"
    ]
    assert [name for name, _ in taken] == ["POST /v1/stablecoin/mints"]
    assert all(p["in"] == "header" and p["required"] is True for _, p in taken)


def test_webhooks_declare_every_event_with_its_payload_and_signature(
    document: dict[str, Any],
) -> None:
    expected = {
        *(f"mint.{s.value}" for s in MintState),
        *(f"redemption.{s.value}" for s in RedemptionState),
        TEST_EVENT,
    }
    webhooks = document["webhooks"]
    assert set(webhooks) == expected
    for event_type, item in webhooks.items():
        post = item["post"]
        headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
        assert headers[SIGNATURE_HEADER]["required"] and headers[EVENT_ID_HEADER]["required"]
        assert "HMAC-SHA256" in headers[SIGNATURE_HEADER]["description"]
        media = post["requestBody"]["content"]["application/json"]
        (value,) = examples_of(media)
        assert value["type"] == event_type
        assert not invalid(document, media["schema"], value), event_type
        body, signature = hooks.example_delivery(event_type)
        assert json.loads(body) == value
        assert examples_of(headers[SIGNATURE_HEADER]) == [signature]
        assert verify(x.SECRET.encode(), signature, body, now=hooks.SIGNED_AT)
        assert signature in post["description"] and body.decode() in post["description"]


def test_webhook_payload_schemas_are_what_the_gateway_sends() -> None:
    produced = {
        hooks.MintEventData: mint_payload(x.mint()),
        hooks.RedemptionEventData: redemption_payload(x.redemption()),
    }
    for struct, payload in produced.items():
        assert set(struct.__struct_fields__) == set(payload), struct.__name__


def test_every_amount_is_an_integer_in_minor_units_with_an_example(
    document: dict[str, Any],
) -> None:
    faults: list[str] = []

    def walk(where: str, schema: dict[str, Any]) -> None:
        for name, prop in (schema.get("properties") or {}).items():
            if name not in AMOUNT_NAMES:
                continue
            types = [prop.get("type")] + [o.get("type") for o in prop.get("oneOf", [])]
            described = (prop.get("description") or "").lower()
            if "integer" not in types:
                faults.append(f"{where}.{name}: not an integer ({prop})")
            if "tiyn" not in described and "minor units" not in described:
                faults.append(f"{where}.{name}: its unit (tiyn) is not said")
            if not prop.get("examples"):
                faults.append(f"{where}.{name}: no example")

    for name, schema in document["components"]["schemas"].items():
        walk(name, schema)
    assert not faults, "\n".join(faults)


def test_the_document_is_served_in_yaml_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    engine = migrated_engine(url)
    settings = load_settings(environ={}, database={"url": url})
    with serve_in_thread(create_app(settings, engine)) as base:
        answer = httpx.get(f"{base}/schema/openapi.yaml", timeout=30)
    engine.dispose()
    assert answer.status_code == 200
    assert "webhooks:" in answer.text and "X-DT-Signature" in answer.text
