"""Log records: fields bound by context, JSON lines, text lines, and secrets taken out."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from gateway.config import load_settings
from gateway.config_ops import secret_values
from gateway.logcontext import (
    ContextFilter,
    JsonFormatter,
    Redactor,
    TextFormatter,
    binds,
    bound,
    configure,
    current,
    default_format,
)

TOKEN = "dtg_0123456789abcdef_Zm9vYmFyYmF6cXV4cXV1eF9zZWNyZXRfdG9rZW4"
WEBHOOK = "whsec_3q2-7wXk9Yb1c5V8nLr0pTq4sUe6vAy2dGh0JkMn"
CHAIN_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
LOG_KEY = "PRIVATE+KEY+dt-gateway/collateral/31337/0xabc+1234abcd+AbCdEfGhIjKlMnOpQrStUvWxYz0123"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(Redactor([CHAIN_KEY]))
    logger = logging.getLogger("tests.logcontext")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    with bound(request_id="r-1"):
        logger.info("outer %s", "one")
        with bound(uetr="u-1", pvp_id="p-1", mint_id=None):
            logger.warning("inner")
        logger.info("outer again")
    logger.info("outside")
    out = lines(stream)
    assert [o["msg"] for o in out] == ["outer one", "inner", "outer again", "outside"]
    assert out[0]["request_id"] == "r-1" and "uetr" not in out[0]
    assert (out[1]["request_id"], out[1]["uetr"], out[1]["pvp_id"]) == ("r-1", "u-1", "p-1")
    assert "mint_id" not in out[1]  # None is not bound
    assert "uetr" not in out[2]
    assert "request_id" not in out[3]
    assert out[1]["level"] == "WARNING" and out[1]["logger"] == "tests.logcontext"
    assert str(out[1]["ts"]).endswith("+00:00")


def test_a_traceback_is_one_field(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"failed with {CHAIN_KEY}")
    except RuntimeError:
        logger.exception("it broke")
    (out,) = lines(stream)
    assert out["msg"] == "it broke"
    assert "RuntimeError: failed with [REDACTED]" in str(out["exc"])
    assert CHAIN_KEY not in stream.getvalue()


def test_fields_follow_into_threads_only_when_copied() -> None:
    seen: dict[str, dict[str, str]] = {}
    with bound(mint_id="m-1"):
        plain = threading.Thread(target=lambda: seen.setdefault("plain", current()))
        plain.start()
        plain.join()
        assert current() == {"mint_id": "m-1"}
    assert seen["plain"] == {}  # a bare thread starts with an empty context
    assert current() == {}


def test_binds_takes_the_argument_by_name_or_position() -> None:
    @binds("mint_id")
    def drive(
        uow: object, sc: object, mint_id: str, *, ticket: int | None = None
    ) -> dict[str, str]:
        return current()

    assert drive(None, None, "m-7") == {"mint_id": "m-7"}
    assert drive(None, None, mint_id="m-8") == {"mint_id": "m-8"}
    assert current() == {}


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN.split("_", 2)[2]),
        (f"token {TOKEN} refused", TOKEN.split("_", 2)[2]),
        (f"endpoint secret {WEBHOOK}", WEBHOOK.removeprefix("whsec_")),
        (f"log key {LOG_KEY}", LOG_KEY.removeprefix("PRIVATE+KEY+")),
        (f"the operator key is {CHAIN_KEY}", CHAIN_KEY),
        (f"the operator key is {CHAIN_KEY.removeprefix('0x')}", CHAIN_KEY.removeprefix("0x")),
        (f"the operator key is {CHAIN_KEY.upper()[2:]}", CHAIN_KEY.upper()[2:]),
        (
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n"
            "-----END PRIVATE KEY-----",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49",
        ),
        ("bearer abc.def.ghijklmnop", "abc.def.ghijklmnop"),
    ],
)
def test_secrets_are_redacted(text: str, gone: str) -> None:
    redactor = Redactor([CHAIN_KEY.upper()])
    cleaned = redactor.clean(text)
    assert gone not in cleaned and "REDACTED" in cleaned


def test_key_ids_and_transaction_hashes_stay() -> None:
    tx = "0x" + "ab" * 32
    cleaned = Redactor([CHAIN_KEY]).clean(f"key {TOKEN} tx {tx}")
    assert "dtg_0123456789abcdef_[REDACTED]" in cleaned  # the id says which key
    assert tx in cleaned  # a 32-byte hash that is not a configured secret is not one


def test_arguments_are_cleaned_too(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("calling with %s and %r", TOKEN, {"secret": WEBHOOK})
    text = stream.getvalue()
    assert TOKEN not in text and WEBHOOK not in text


def test_every_secret_setting_is_known_to_the_redactor() -> None:
    settings = load_settings(
        environ={},
        stablecoin={"operator_key": CHAIN_KEY, "webhook_secret": WEBHOOK},
        collateral={"log_key": LOG_KEY},
        pvp={"connector_token": "connector-token-123"},
        connector={"admin_token": "admin-token-456"},
    )
    found = set(secret_values(settings))
    assert {CHAIN_KEY, WEBHOOK, LOG_KEY, "connector-token-123", "admin-token-456"} <= found
    assert all(isinstance(v, str) for v in found)
    assert not any(isinstance(v, SecretStr) for v in found)


def test_text_lines_show_the_fields_after_the_message() -> None:
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "r-9"
    line = TextFormatter().format(record)
    assert line.endswith("INFO gateway.x: hello [request_id=r-9]")


def test_json_is_the_default_for_serve_off_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert default_format("serve", io.StringIO()) == "json"
    assert default_format("serve", Tty()) == "text"
    assert default_format("keys", io.StringIO()) == "text"


def test_configure_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    level = root.level
    try:
        first = configure("INFO", "json", stream=io.StringIO())
        second = configure("WARNING", "text", stream=io.StringIO())
        assert first not in root.handlers and second in root.handlers
        assert foreign in root.handlers
    finally:
        for h in (foreign, second):
            root.removeHandler(h)
        root.setLevel(level)
