"""Named crash points, for the recovery tests that ``kill -9`` a process at a precise step.

``crash_point("mint.after_ledger", settings.faults)`` does nothing unless that name is listed in
the settings, in which case the process sends itself SIGKILL: no cleanup, no flush, exactly
what a power cut or the OOM killer does.
"""

from __future__ import annotations

import logging
import os
import signal

from gateway.config import FaultSettings

log = logging.getLogger(__name__)


def crash_point(name: str, faults: FaultSettings) -> None:
    if name in faults.crash_points:
        log.critical("crash point %s reached: SIGKILL", name)
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["crash_point"]
