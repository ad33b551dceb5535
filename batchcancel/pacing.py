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

A granted request is a `Slot`: entered at once (`with slot:` or `async with pacer.slot()`),
it is answered at most once, returned to the window if it never was, and gives its in-flight
place back on exit, so acquire / answered / unused / release cannot be mismatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Final

__all__ = ["Pacer", "RequestWindow", "Slot", "safety_margin"]

MARGIN_SHARE: Final = 0.01
MARGIN_MIN_SECONDS: Final = 0.01
FULL_WAIT: Final = 0.005  # seconds between looks while the whole limit is in flight
# At least this long per wait for the window: at the very edge of a period the subtraction can
# round to 0 and a clock that does not move by itself (the simulation's) would never get there.
MIN_WAIT: Final = 0.001

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def safety_margin(period: float) -> float:
    """Seconds added to the venue's window for clock granularity: 1 %, at least 10 ms."""
    return max(period * MARGIN_SHARE, MARGIN_MIN_SECONDS)


class RequestWindow:
    """At most `limit` requests in any `period` at the venue, whatever the network did.

    A request counts from `grant()` until `period` after `answered()`; granted requests not
    yet answered count in every window.
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._answered: deque[float] = deque()  # clock() of each answer, oldest first
        self._open = 0  # granted and not yet answered

    def try_grant(self) -> bool:
        """Reserve a request now if one more cannot exceed the limit in any window."""
        now = self._clock()
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
                left = self._answered[0] + self.period - self._clock()
                await self._sleep(max(left, MIN_WAIT))
            else:
                await self._sleep(FULL_WAIT)  # the whole limit is in flight: wait for answers

    def answered(self) -> None:
        """The request of a granted slot has its answer (or was given up on) now."""
        self._open -= 1
        self._answered.append(self._clock())

    def returned(self) -> None:
        """A granted slot was not used: no request left."""
        self._open -= 1


class Slot:
    """One granted request: `answered()` once its answer is in (or it was given up on after
    leaving); on exit a slot never answered is returned unused, and the in-flight place is
    given back either way."""

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self._answered = False
        self._closed = False

    def answered(self) -> None:
        """The request left and its answer is in, or it was given up on: it counts in the
        window from now for one period. A second call does nothing."""
        if not self._answered and not self._closed:
            self._answered = True
            self._pacer._answered()

    def close(self) -> None:
        """Give the slot back: unused if it was never answered. A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if not self._answered:
            self._pacer._unused()
        self._pacer._release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Pacer:
    """Gate for one venue's requests. `rate_limit` 0 means unthrottled."""

    def __init__(
        self,
        *,
        rate_limit: int,
        period: float,
        max_in_flight: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._window = (
            RequestWindow(rate_limit, period + safety_margin(period), clock=clock, sleep=sleep)
            if rate_limit > 0
            else None
        )
        self._slots = asyncio.Semaphore(max_in_flight)
        self._halted = asyncio.Event()
        self.paused_until = 0.0  # clock() until which nothing is sent

    @property
    def halted(self) -> bool:
        """True once the lane must send nothing more."""
        return self._halted.is_set()

    def halt(self) -> None:
        """Stop letting requests through; a waiting `grant` returns None."""
        self._halted.set()

    async def wait_halted(self) -> None:
        """Return once the lane is halted."""
        await self._halted.wait()

    def pause(self, seconds: float) -> None:
        """Send nothing to this venue for `seconds` (after a 429)."""
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    @property
    def pause_left(self) -> float:
        """Seconds of pause remaining."""
        return max(0.0, self.paused_until - self._clock())

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot | None]:
        """`async with pacer.slot() as slot:` a granted Slot for one request, or None when
        the lane halted while waiting (send nothing then)."""
        granted = await self.grant()
        if granted is None:
            yield None
            return
        with granted:
            yield granted

    async def grant(self) -> Slot | None:
        """Wait for an in-flight place, the end of any pause and a rate slot; None if halted.
        The Slot must be entered at once (`with slot:`), by whoever sends its request."""
        await self._slots.acquire()
        while not self.halted:
            if (left := self.pause_left) > 0:
                await self._unless_halted(self._sleep(left))
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
            return Slot(self)
        self._slots.release()
        return None

    async def _unless_halted(self, waiting: Awaitable[None]) -> bool:
        """Run `waiting` to its end, or cancel it when the lane halts first; True if it ended.
        The helpers are cancelled, never awaited, so a cancellation of the caller itself
        (its session ending) is never swallowed here."""
        task = asyncio.ensure_future(waiting)
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait({task, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            task.cancel()  # does nothing once it ended; a cancelled wait reserves nothing
        if task.done() and not task.cancelled():
            task.result()
            return True
        return False

    def _answered(self) -> None:
        if self._window is not None:
            self._window.answered()

    def _unused(self) -> None:
        if self._window is not None:
            self._window.returned()

    def _release(self) -> None:
        self._slots.release()
