"""API keys as an operator manages them, on SQLite and PostgreSQL: ``dt-gateway keys list |
rotate | revoke`` (real processes), expiry, the last use written at most once a minute, a
revoked key refused by every replica within a second, and one ``serve`` per SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.api.deps import KeyCache
from gateway.config import load_settings
from gateway.config_ops import KeySettings
from gateway.db import utcnow
from gateway.errors import Unauthorized
from gateway.messaging.serving import free_port, serve_in_thread
from tests.support.databases import migrated_engine
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent / "dt-gateway"


def _cli(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env["DT_GATEWAY_DATABASE__URL"] = engine.url.render_as_string(hide_password=False)
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _works(engine: Engine, token: str) -> bool:
    try:
        auth.authenticate(engine, token)
        return True
    except Unauthorized:
        return False


def test_list_rotate_and_revoke_from_the_command_line(engine: Engine) -> None:
    created = _ok(_cli(engine, "keys", "create", "--role", "exchange", "--subject", "exch-9",
                       "--label", "exchange nine", "--expires", "90d"))  # fmt: skip
    old_id, old_token = created["key_id"], created["token"]
    assert created["expires_at"] is not None
    listed = _ok(_cli(engine, "keys", "list"))["keys"]
    assert [(k["key_id"], k["state"], k["role"], k["subject"]) for k in listed] == [
        (old_id, "active", "exchange", "exch-9")
    ]
    assert listed[0]["last_used_at"] is None

    rotated = _ok(_cli(engine, "keys", "rotate", old_id, "--grace", "1h"))
    new_id, new_token = rotated["key_id"], rotated["token"]
    assert rotated["replaces"] == old_id and rotated["subject"] == "exch-9"
    assert _works(engine, old_token) and _works(engine, new_token)  # both, during the grace
    principal = auth.authenticate(engine, new_token)
    assert (principal.role.value, principal.subject, principal.label) == (
        "exchange",
        "exch-9",
        "exchange nine",
    )
    listed = {k["key_id"]: k for k in _ok(_cli(engine, "keys", "list"))["keys"]}
    assert listed[new_id]["replaces"] == old_id
    assert listed[old_id]["expires_at"] == rotated["old_key_stops_at"]

    again = _ok(_cli(engine, "keys", "rotate", new_id, "--grace", "0"))  # at once
    assert not _works(engine, new_token) and _works(engine, again["token"])
    assert _ok(_cli(engine, "keys", "revoke", again["key_id"])) == {"revoked": again["key_id"]}
    assert not _works(engine, again["token"])

    everything = _cli(engine, "keys", "list", "--all")
    states = {k["key_id"]: k["state"] for k in _ok(everything)["keys"]}
    assert states == {old_id: "active", new_id: "revoked", again["key_id"]: "revoked"}
    for token in (old_token, new_token, again["token"]):
        assert token.split("_", 2)[2] not in everything.stdout  # never a secret
    with engine.connect() as conn:
        hashes = [r[0] for r in conn.execute(sa.text("SELECT secret_sha256 FROM api_key"))]
    assert not any(h in everything.stdout for h in hashes)

    refused = _cli(engine, "keys", "rotate", new_id)
    assert refused.returncode == 1 and "NOT_FOUND" in refused.stderr
    assert _cli(engine, "keys", "create", "--role", "operator", "--expires", "soon").returncode


def test_an_expired_key_is_refused_even_while_cached(engine: Engine) -> None:
    expires = utcnow() + timedelta(seconds=0.3)
    token = auth.create_key(engine, "operator", expires_at=expires).token
    cache = KeyCache(engine, KeySettings(cache_seconds=1.0))
    assert cache.principal(token).expires_at == expires
    wait_for(lambda: utcnow() > expires, "the clock past the expiry", interval=0.02)
    with pytest.raises(Unauthorized):
        cache.principal(token)  # the cached principal is past its expiry
    with pytest.raises(Unauthorized):
        auth.authenticate(engine, token)
    cache.close()


def test_the_last_use_is_written_at_most_once_a_minute(engine: Engine) -> None:
    token = auth.create_key(engine, "operator").token
    updates: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEY"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        cache = KeyCache(engine, KeySettings(cache_seconds=0.5, last_used_every_seconds=60))
        for _ in range(200):
            cache.principal(token)
        cache.close()  # writes what is noted and stops its writer
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(updates) == 1
    (listed,) = auth.list_keys(engine)
    assert listed.last_used_at is not None
    assert abs((utcnow() - listed.last_used_at).total_seconds()) < 60


@contextmanager
def _replicas(engine: Engine, n: int) -> Iterator[list[str]]:
    settings = load_settings(environ={}, database={"url": str(engine.url)})
    with ExitStack() as stack:
        yield [stack.enter_context(serve_in_thread(create_app(settings, engine))) for _ in range(n)]


def test_a_revoked_key_stops_working_on_every_replica_once_cached_keys_expire(
    engine: Engine,
) -> None:
    created = auth.create_key(engine, "operator")
    headers = {"Authorization": f"Bearer {created.token}"}
    with _replicas(engine, 2) as urls:

        def statuses() -> list[int]:
            return [httpx.get(u + "/v1/wallets/w", headers=headers).status_code for u in urls]

        for _ in range(5):  # every replica has the key in its cache
            assert statuses() == [404, 404]
        auth.revoke_key(engine, created.principal.key_id)

        # Each replica drops it when its cache entry runs out (KeySettings.cache_seconds, 1 s):
        # wait for that, on every replica, rather than for a fixed time.
        def refused_by_both() -> bool:
            seen = statuses()
            assert all(s in (401, 404) for s in seen), seen
            return seen == [401, 401]

        wait_for(refused_by_both, "the key refused by both replicas", timeout=30, interval=0.05)


# ------------------------------------------------------------------ one serve per SQLite file


def _serve(db_url: str, port: int, tmp: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env.update({"DT_GATEWAY_DATABASE__URL": db_url, "DT_GATEWAY_DATA_DIR": str(tmp)})
    return subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_healthy(proc: subprocess.Popen[str], port: int) -> None:
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
        f"serve on {port} answering",
        timeout=60,
        proc=proc,
        tolerate=(httpx.HTTPError,),
        interval=0.05,
    )


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_second_serve_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    migrated_engine(db_url).dispose()
    first_port = free_port()
    first = _serve(db_url, first_port, tmp_path)
    try:
        _wait_healthy(first, first_port)
        second = _serve(db_url, free_port(), tmp_path)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "DATABASE_IN_USE" in err and f"pid {first.pid}" in err
        assert "gateway.db" in err and "PostgreSQL" in err
        assert httpx.get(f"http://127.0.0.1:{first_port}/health").status_code == 200
    finally:
        _stop(first, signal.SIGKILL)  # the lock goes with the process, however it ends
    third_port = free_port()
    third = _serve(db_url, third_port, tmp_path)
    try:
        _wait_healthy(third, third_port)
    finally:
        _stop(third)
