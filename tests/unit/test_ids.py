"""Identifiers that sort by creation time (gateway.ids)."""

from __future__ import annotations

import re
import time

from gateway.ids import sortable_id


def test_ids_sort_in_the_order_they_were_made_and_are_unique() -> None:
    made = []
    for _ in range(2000):
        made.append(sortable_id("DTGW-"))
    time.sleep(0.002)
    made.append(sortable_id("DTGW-"))
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_the_prefixes_in_use_fit_iso_20022_max35text() -> None:
    for prefix in ("DTGW-", "PVP", "C", "S", "T", "X"):
        made = sortable_id(prefix)
        assert len(made) <= 35
        assert re.fullmatch(rf"{re.escape(prefix)}[0-9a-f]{{29}}", made)
