"""The host's clock evidence at a run's start: synchronisation state as the OS reports it.

Audit-trail rules (FINRA 4590, CAT) want clocks within 50 ms of UTC and a record of it. On
Linux the kernel's adjtimex(2), asked without changing anything, says whether the clock is
synchronised (an NTP/PTP daemon disciplines it) and its estimated error; elsewhere, or when
the call fails, the state is `unknown`. Instant: nothing is run in a child process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["clock_evidence"]

_TIME_ERROR: Final = 5  # adjtimex's answer when the clock is not synchronised
_STA_UNSYNC: Final = 0x0040


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> up to `status`, then room for the rest (Linux).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def clock_evidence() -> dict[str, Any]:
    """{"sync": synchronized|unsynchronized|unknown, "source", "esterror_us", "maxerror_us",
    "wall": ISO UTC, "monotonic_ns"}: what a run records of the host's clock (no floats)."""
    evidence: dict[str, Any] = {
        "sync": "unknown",
        "source": "none",
        "wall": datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
        "monotonic_ns": time.monotonic_ns(),
    }
    if not sys.platform.startswith("linux"):
        return evidence
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()  # modes 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return evidence
    if state < 0:
        return evidence
    unsynchronised = state == _TIME_ERROR or bool(timex.status & _STA_UNSYNC)
    evidence.update(
        sync="unsynchronized" if unsynchronised else "synchronized",
        source="adjtimex",
        esterror_us=int(timex.esterror),
        maxerror_us=int(timex.maxerror),
    )
    return evidence
