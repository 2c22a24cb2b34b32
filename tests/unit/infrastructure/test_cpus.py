"""CPU lists (``cpus``, ``connector.cpus``, ``--cpus``) and pinning a process to them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config import load_settings
from gateway.cpus import format_cpu_list, parse_cpu_list, pin_process
from gateway.errors import InvalidInput


@pytest.mark.parametrize(
    ("spec", "cpus"),
    [("0", {0}), ("3", {3}), ("0-3", {0, 1, 2, 3}), ("0,2-3", {0, 2, 3}), (" 1 , 4-5", {1, 4, 5})],
)
def test_parses_the_linux_cpu_list_format(spec: str, cpus: set[int]) -> None:
    assert parse_cpu_list(spec) == cpus


@pytest.mark.parametrize("spec", ["", "a", "-1", "1-", "3-1", "1,,2", "0x1", "1.5", "1;2"])
def test_refuses_anything_else(spec: str) -> None:
    with pytest.raises(ValueError, match="CPU list"):
        parse_cpu_list(spec)


@given(st.sets(st.integers(min_value=0, max_value=300), min_size=1))
def test_format_is_the_inverse_of_parse(cpus: set[int]) -> None:
    text = format_cpu_list(cpus)
    assert parse_cpu_list(text) == cpus
    assert len(text.split(",")) == len(  # consecutive CPUs collapse into one range
        [c for c in cpus if c - 1 not in cpus]
    )


def test_settings_refuse_a_malformed_list_at_load_time() -> None:
    with pytest.raises(ValidationError, match="not a CPU list"):
        load_settings(environ={"DT_GATEWAY_CPUS": "1-0"})
    with pytest.raises(ValidationError, match="not a CPU list"):
        load_settings(environ={"DT_GATEWAY_CONNECTOR__CPUS": "x"})
    settings = load_settings(environ={"DT_GATEWAY_CPUS": "0", "DT_GATEWAY_CONNECTOR__CPUS": "1"})
    assert (settings.cpus, settings.connector.cpus) == ("0", "1")
    assert load_settings(environ={}).cpus is None


def test_a_cpu_this_process_may_not_use_is_refused_and_nothing_changes() -> None:
    allowed = os.sched_getaffinity(0)
    with pytest.raises(InvalidInput, match=f"may use {format_cpu_list(allowed)}"):
        pin_process(f"{max(allowed) + 1}")
    with pytest.raises(InvalidInput, match="CPU list"):
        pin_process("one")
    assert os.sched_getaffinity(0) == allowed


def test_moves_every_thread_and_the_threads_started_later() -> None:
    """In a child process (pinning the test runner would slow the rest of the suite)."""
    target = max(os.sched_getaffinity(0))
    script = textwrap.dedent(
        f"""
        import os, threading
        from gateway.cpus import pin_process

        stop = threading.Event()
        before = threading.Thread(target=stop.wait)
        before.start()
        assert pin_process("{target}") == {{{target}}}
        after = threading.Thread(target=stop.wait)
        after.start()
        tids = os.listdir("/proc/self/task")
        assert len(tids) >= 3, tids
        print(sorted({{frozenset(os.sched_getaffinity(int(t))) for t in tids}}, key=sorted))
        stop.set()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == f"[frozenset({{{target}}})]"
