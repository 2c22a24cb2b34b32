"""Processes as an operator runs them: ``dt-gateway`` subprocesses that can be killed with
SIGKILL and started again on the same database, one-shot CLI commands, and polling.

Shared by the chaos runner and the end-to-end tests (``tests/e2e/pvp/harness.py``). Waiting is
polling with a timeout: nothing is timed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin" / "dt-gateway"


class Timeout(AssertionError):
    pass


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except httpx.HTTPError as exc:  # a process restarting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > end:
            raise Timeout(f"timed out waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def clean_env() -> dict[str, str]:
    """The parent's environment without any DT_GATEWAY_* setting (each process gets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}


@dataclass
class Process:
    """One ``dt-gateway`` subprocess that can be killed with SIGKILL and started again."""

    name: str
    args: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    health_path: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    """The extra settings of the current run (crash points, ...)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: Mapping[str, str] | None = None, wait: bool = True) -> None:
        assert not self.alive, f"{self.name} is already running"
        self.extra = dict(extra_env or {})
        env = {**self.env, **self.extra}
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} {sorted(extra_env or {})}\n".encode())
            self.proc = subprocess.Popen(
                [str(BIN), *self.args, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                return httpx.get(self.url + self.health_path, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"{self.name} to start", ready, timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no cleanup, no flush."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.kill()
        self.start(extra_env)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run_cli(env: Mapping[str, str], *args: str) -> str:
    """Run one ``dt-gateway`` command to completion; its stdout."""
    done = subprocess.run(
        [str(BIN), *args], cwd=ROOT, env=dict(env), capture_output=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"dt-gateway {' '.join(args)} -> {done.returncode}\n{done.stdout!r}\n{done.stderr!r}"
        )
    return done.stdout.decode()


__all__ = ["BIN", "ROOT", "Process", "Timeout", "clean_env", "run_cli", "wait_for"]
