"""Pacing for one venue: a sliding window of requests, an in-flight bound and a venue pause.

Venues count requests per sliding window at the moment each one reaches them, which we never
see: it lies somewhere between our send and its answer. asyncio-throttle's Throttler stamps a
slot when it is granted; here the request leaves only after its attempt row is committed, and
under a burst the venue saw the first wave late and the next one early, so it counted more
than its limit in one window (measured: about `max_in_flight` 429s per venue in a five-venue
run at the configured limits). `RequestWindow` therefore counts a request from the moment its
slot is granted until one period after its answer came back: whenever the venue counted it,
that moment lies inside the span we count, so no window at the venue can exceed the limit. It
costs one answer latency per period (a few ms here) and sleeps until the oldest request leaves
the window instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final

__all__ = ["Pacer", "RequestWindow", "safety_margin"]

MARGIN_SHARE: Final = 0.01
MARGIN_MIN_SECONDS: Final = 0.01


def safety_margin(period: float) -> float:
    """Seconds added to the venue's window for clock granularity: 1 %, at least 10 ms."""
    return max(period * MARGIN_SHARE, MARGIN_MIN_SECONDS)


class RequestWindow:
    """At most `limit` requests in any `period` at the venue, whatever the network did.

    A request counts from `grant()` until `period` after `answered()`; granted requests not
    yet answered count in every window.
    """

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._answered: deque[float] = deque()  # time.monotonic() of each answer, oldest first
        self._open = 0  # granted and not yet answered

    def try_grant(self) -> bool:
        """Reserve a request now if one more cannot exceed the limit in any window."""
        now = time.monotonic()
        while self._answered and now - self._answered[0] >= self.period:
            self._answered.popleft()
        if len(self._answered) + self._open < self.limit:
            self._open += 1
            return True
        return False

    async def grant(self) -> None:
        """Wait until one more request cannot exceed the limit in any window; reserve it.
        Cancelling the wait reserves nothing."""
        while not self.try_grant():
            if self._answered:
                await asyncio.sleep(self._answered[0] + self.period - time.monotonic())
            else:
                await asyncio.sleep(0.005)  # the whole limit is in flight: wait for answers

    def answered(self) -> None:
        """The request of a granted slot has its answer (or was given up on) now."""
        self._open -= 1
        self._answered.append(time.monotonic())

    def returned(self) -> None:
        """A granted slot was not used: no request left."""
        self._open -= 1


class Pacer:
    """Gate for one venue's requests. `rate_limit` 0 means unthrottled."""

    def __init__(self, *, rate_limit: int, period: float, max_in_flight: int) -> None:
        self._window = (
            RequestWindow(rate_limit, period + safety_margin(period)) if rate_limit > 0 else None
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

        After True, call `answered()` once the request is answered (or `unused()` if it never
        left), then `release()`.
        """
        await self._slots.acquire()
        while not self.halted:
            if (left := self.pause_left) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halted.wait(), timeout=left)
                continue
            if self._window is not None:
                # A full window can take a whole period (60 s at ZebPay) to free a slot: a
                # stop must not wait for it.
                if not self._window.try_grant() and not await self._unless_halted(
                    self._window.grant()
                ):
                    continue
                if self.pause_left > 0 or self.halted:
                    self._window.returned()
                    continue
            return True
        self._slots.release()
        return False

    async def _unless_halted(self, waiting: Coroutine[Any, Any, None]) -> bool:
        """Run `waiting` to its end, or cancel it when the lane halts first; True if it ended."""
        task = asyncio.ensure_future(waiting)
        halted = asyncio.ensure_future(self._halted.wait())
        await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, halted):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return not task.cancelled()

    def answered(self) -> None:
        """The request of an acquired slot has its answer, or was given up on."""
        if self._window is not None:
            self._window.answered()

    def unused(self) -> None:
        """An acquired slot's request will not be sent."""
        if self._window is not None:
            self._window.returned()

    def release(self) -> None:
        """Give back the in-flight slot of a finished request."""
        self._slots.release()
