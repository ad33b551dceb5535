"""Pacing for one venue: a sliding window of send times, an in-flight bound and a venue pause.

Venues count requests per sliding window as they arrive. asyncio-throttle's Throttler keeps
the same kind of log, but stamps a slot when it is granted; here a slot is granted before the
attempt row is committed and the request leaves only after, so under a burst the stamps ran
ahead of the real send times and the venue saw more than its limit in a window (measured:
about `max_in_flight` 429s per venue in `batchcancel demo`). `SendWindow` stamps each slot when
its request actually leaves, counts slots granted but not yet sent as inside every window, and
sleeps until the oldest stamp expires rather than polling. A small safety margin covers the
network between our send and the venue's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Final

__all__ = ["Pacer", "SendWindow", "safety_margin"]

MARGIN_SHARE: Final = 0.02
MARGIN_MIN_SECONDS: Final = 0.03


def safety_margin(period: float) -> float:
    """Seconds added to the venue's window: 2 %, at least 30 ms."""
    return max(period * MARGIN_SHARE, MARGIN_MIN_SECONDS)


class SendWindow:
    """At most `limit` sends in any `period` seconds, counting granted slots not yet sent."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._sent: deque[float] = deque()  # time.monotonic() of each send, oldest first
        self._granted = 0  # slots handed out whose request has not left yet

    async def grant(self) -> None:
        """Wait until one more send cannot exceed the limit in any window, and reserve it."""
        while True:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.period:
                self._sent.popleft()
            if len(self._sent) + self._granted < self.limit:
                self._granted += 1
                return
            if self._sent:
                await asyncio.sleep(self._sent[0] + self.period - now)
            else:
                await asyncio.sleep(0.001)  # every slot is granted and unsent: wait for sends

    def sent(self) -> None:
        """The request of a granted slot is leaving now."""
        self._granted -= 1
        self._sent.append(time.monotonic())

    def returned(self) -> None:
        """A granted slot was not used (the attempt could not be recorded)."""
        self._granted -= 1


class Pacer:
    """Gate for one venue's requests. `rate_limit` 0 means unthrottled."""

    def __init__(self, *, rate_limit: int, period: float, max_in_flight: int) -> None:
        self._window = (
            SendWindow(rate_limit, period + safety_margin(period)) if rate_limit > 0 else None
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
        """Wait for an in-flight slot, the end of any pause and a rate slot. False if halted.

        After True, call `sending()` when the request leaves (or `unused()`), then `release()`.
        """
        await self._slots.acquire()
        while not self.halted:
            if (left := self.pause_left) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halted.wait(), timeout=left)
                continue
            if self._window is not None:
                await self._window.grant()
                if self.pause_left > 0 or self.halted:
                    self._window.returned()
                    continue
            return True
        self._slots.release()
        return False

    def sending(self) -> None:
        """The request of an acquired slot leaves now."""
        if self._window is not None:
            self._window.sent()

    def unused(self) -> None:
        """An acquired slot's request will not be sent."""
        if self._window is not None:
            self._window.returned()

    def release(self) -> None:
        """Give back the in-flight slot of a finished request."""
        self._slots.release()
