"""The connector authenticates what a network posts before judging its content: an envelope
that is unsigned, or signed by another key than the one pinned for the sender its header
names, is refused DS0B whatever its content; only a correctly signed one gets content codes."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from gateway.connector.keys import generate_identity
from gateway.iso20022 import (
    MessageRejected,
    OriginalRef,
    Pacs028,
    StatusRequest,
    build,
    header_for,
    parse,
    sign_envelope,
)
from tests.integration.connector.fakenet import BIC
from tests.integration.connector.support import Env


def _broken_status_request() -> bytes:
    """An unsigned pacs.028 from the DT network with content errors (an element the schema
    does not admit, and one it requires missing)."""
    ref = OriginalRef("F0", "pacs.009.001.08", "e2e", "0f7c6b1e-1d2c-4b8a-9f3e-2a1b3c4d5e6f")
    msg = Pacs028("SIGFIRST-1", datetime.now(UTC), (StatusRequest(original=ref),))
    raw = build(msg, header_for(msg, from_bic=BIC, to_bic="SWHQBEBBXXX"))
    broken = raw.replace(b"</GrpHdr>", b"<Bogus>x</Bogus></GrpHdr>", 1)
    broken = broken.replace(b"<OrgnlMsgId>F0</OrgnlMsgId>", b"", 1)
    assert broken.count(b"Bogus") == 2 and b"OrgnlMsgId" not in broken
    return broken


def _post(env: Env, raw: bytes) -> str:
    r = httpx.post(
        env.url + "/iso20022/messages", content=raw, headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 400, r.text
    cert = env.http.get("/v1/certificate").json()["certificate_pem"]
    admi = parse(r.content, cert_pem=cert).message
    return str(admi.reason)  # type: ignore[attr-defined]


def test_content_errors_are_judged_only_once_the_sender_is_authenticated(env: Env) -> None:
    broken = _broken_status_request()
    with pytest.raises(MessageRejected) as content:
        parse(broken)
    assert content.value.code != "DS0B"  # the control: the content is refused by itself
    assert _post(env, broken) == "DS0B"  # unsigned
    key, cert = generate_identity("not the DT network")
    assert _post(env, sign_envelope(broken, key, cert)) == "DS0B"  # another key than pinned
    signed = sign_envelope(broken, env.dt.key_pem, env.dt.cert_pem)
    assert _post(env, signed) == content.value.code  # authenticated: now its content code
