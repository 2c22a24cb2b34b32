"""Identifiers that sort by creation time.

Message ids, PvP ids and references are keys of unique indexes in both processes. Random
keys land on a random leaf of each index, so every insert dirties a page of its own, which
the write-ahead log and then the checkpoint write whole (4 KiB for a 40-byte entry), and
leaves pages split half full. Keys that grow with time land on the index's last leaf, which
consecutive inserts share: fewer pages written per transaction and per checkpoint.

Not secrets and not guessable-sensitive (a PvP's secret, a UETR, an API key are made
elsewhere, at random); unique by their random tail, within and across processes.
"""

from __future__ import annotations

import secrets
import threading
import time

_lock = threading.Lock()
_last = 0


def sortable_id(prefix: str, random_hex: int = 16) -> str:
    """``prefix`` + the microsecond clock (13 hex digits, fixed width: sorts as text until
    the year 2112) + ``random_hex`` random hex digits. Within a process each id gets a later
    microsecond than the one before, so ids sort in the order they were made. With the
    defaults and a prefix of up to six characters it fits ISO 20022's Max35Text."""
    global _last
    with _lock:
        _last = max(_last + 1, time.time_ns() // 1000)
        stamp = _last
    tail = secrets.token_hex((random_hex + 1) // 2)[:random_hex]
    return f"{prefix}{stamp:013x}{tail}"


__all__ = ["sortable_id"]
