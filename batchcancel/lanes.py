"""Pacing for one venue: a sliding-window Throttler, an in-flight bound and a venue pause.

asyncio-throttle keeps a log of start times and never lets more than `rate_limit` starts into
any window of `period`, which is how venues count. It polls every 10 ms per waiter, so only one
dispatcher per lane waits on it. A request can reach the venue a little after one that started
later (the audit commit sits between), so the window is stretched by a small safety margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from asyncio_throttle.throttler import Throttler

__all__ = ["Pacer", "safety_margin"]

MARGIN_SHARE: Final = 0.02
MARGIN_MIN_SECONDS: Final = 0.03


def safety_margin(period: float) -> float:
    """Seconds added to the venue's window: 2 %, at least 30 ms."""
    return max(period * MARGIN_SHARE, MARGIN_MIN_SECONDS)


class Pacer:
    """Gate for one venue's requests. `rate_limit` 0 means unthrottled."""

    def __init__(self, *, rate_limit: int, period: float, max_in_flight: int) -> None:
        self._throttler = (
            Throttler(rate_limit, period + safety_margin(period), retry_interval=0.005)
            if rate_limit > 0
            else None
        )
        self._slots = asyncio.Semaphore(max_in_flight)
        self._halted = asyncio.Event()
        self.paused_until = 0.0  # time.monotonic() until which nothing is sent

    @property
    def halted(self) -> bool:
        """True once the lane must send nothing more."""
        return self._halted.is_set()

    def halt(self) -> None:
        """Stop letting requests through; a waiting `acquire` returns False."""
        self._halted.set()

    def pause(self, seconds: float) -> None:
        """Send nothing to this venue for `seconds` (after a 429)."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    @property
    def pause_left(self) -> float:
        """Seconds of pause remaining."""
        return max(0.0, self.paused_until - time.monotonic())

    async def acquire(self) -> bool:
        """Wait for an in-flight slot, the end of any pause and a rate slot. False if halted."""
        await self._slots.acquire()
        while not self.halted:
            if (left := self.pause_left) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halted.wait(), timeout=left)
                continue
            if self._throttler is not None:
                await self._throttler.acquire()  # type: ignore[no-untyped-call]
            if self.pause_left <= 0 and not self.halted:
                return True
        self._slots.release()
        return False

    def release(self) -> None:
        """Give back the in-flight slot of a finished request."""
        self._slots.release()
