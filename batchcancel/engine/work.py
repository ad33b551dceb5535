"""A lane's work queue: the venue's unsent orders paged from the store, a heap of retries due
later, orders a previous holder left in flight (released once its timeout is over), and the
wake-up that makes the lane look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable
from typing import Final

from batchcancel.audit.ports import LaneStore
from batchcancel.audit.records import OrderToSend
from batchcancel.drain_types import Clock, Offload
from batchcancel.engine.policy import JobState
from batchcancel.errors import AuditError, LaneLostError

__all__ = ["LOAD_POLL", "PAGE_SIZE", "WorkQueue"]

PAGE_SIZE: Final = 2000
LOAD_POLL: Final = 0.2  # seconds between looks for newly loaded orders
MIN_WAIT: Final = 0.001  # seconds: the shortest wait for a retry or a takeover that is due


class WorkQueue:
    """What one lane sends next. `halted()` ends every wait; `busy()` says requests are still
    in flight (their answers may queue retries); `more_coming()` that orders are loading."""

    def __init__(
        self,
        *,
        store: LaneStore,
        run_id: str,
        venue: str,
        to_confirm: bool,
        clock: Clock,
        offload: Offload,
        halted: Callable[[], bool],
        busy: Callable[[], bool],
        more_coming: Callable[[], bool],
        on_lost: Callable[[str], None],
        on_audit_failure: Callable[[AuditError], None],
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.venue = venue
        self.to_confirm = to_confirm
        self.clock = clock
        self.offload = offload
        self.halted = halted
        self.busy = busy
        self.more_coming = more_coming
        self.on_lost = on_lost
        self.on_audit_failure = on_audit_failure
        self._retries: list[tuple[float, int, JobState]] = []  # (due, tiebreak, job)
        self._counter = 0
        self._page: list[OrderToSend] = []
        self._after_pk = 0
        self._exhausted = False
        # What the previous holder left in flight, re-sent once its request timeout is over.
        self._takeover: tuple[float, list[int]] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for work again (new orders were recorded, an answer came, a halt)."""
        self._wake.set()

    def look_again(self) -> None:
        """Orders were added to the run behind the page cursor's end (a list found them):
        the next look reads on from where it stopped."""
        self._exhausted = False
        self.wake()

    def take_over_later(self, wait: float, order_pks: list[int]) -> None:
        """The previous holder may still be sending these orders: re-send them only once
        `wait` seconds (its request timeout) have passed."""
        if order_pks:
            self._takeover = (self.clock.monotonic() + wait, order_pks)

    def retry_after(self, job: JobState, delay: float) -> None:
        """Send this order again once `delay` seconds have passed."""
        self._counter += 1
        heapq.heappush(self._retries, (self.clock.monotonic() + delay, self._counter, job))

    def put_back(self, orders: list[OrderToSend]) -> None:
        """Orders taken with `next_order` but not sent: they come next, in this order."""
        self._page = self._page + orders[::-1]  # a stack: the last one is popped first

    async def next_job(self) -> JobState | None:
        """A due retry, else the next unsent order; None when nothing is left to send."""
        while not self.halted():
            now = self.clock.monotonic()
            if self._takeover is not None and self._takeover[0] <= now:
                await self._release_taken_over()
                continue
            if self._retries and self._retries[0][0] <= now:
                return heapq.heappop(self._retries)[2]
            # Whether loading is over is read before the look: rows recorded while the look
            # runs (the loader's last ones) are then found by the next look, not missed.
            loading = self.more_coming()
            order = await self.next_order()
            if order is not None:
                return JobState(order, attempt=order.attempts)
            if not self._retries and not self.busy() and not loading and not self._takeover:
                return None
            due = [self._retries[0][0]] if self._retries else []
            due += [self._takeover[0]] if self._takeover else []
            # At least MIN_WAIT: a due time a hair ahead would fire as "now" and spin.
            timeout = max(min(due) - now, MIN_WAIT) if due else None
            if loading:
                self._exhausted = False  # look again: the loader is still adding orders
                timeout = LOAD_POLL if timeout is None else min(timeout, LOAD_POLL)
            await self.wait(timeout)
        return None

    async def wait(self, timeout: float | None) -> None:
        """Until the next `wake()`, or `timeout` seconds (None: no limit)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def next_order(self) -> OrderToSend | None:
        """The next unsent (or, confirming, cancel_pending) order of the venue, or None."""
        if not self._page and not self._exhausted:
            try:
                self._page = await self.offload(
                    self.store.pending_page,
                    self.run_id,
                    self.venue,
                    after_pk=self._after_pk,
                    limit=PAGE_SIZE,
                    to_confirm=self.to_confirm,
                )
            except AuditError as exc:
                self.on_audit_failure(exc)  # stops every lane; the run ends in order
                return None
            self._page.reverse()
            if self._page:
                self._after_pk = self._page[0].pk
            else:
                self._exhausted = True
        return self._page.pop() if self._page else None

    async def _release_taken_over(self) -> None:
        """The previous holder's in-flight orders become this lane's to send."""
        assert self._takeover is not None
        _, order_pks = self._takeover
        self._takeover = None
        try:
            released = await self.offload(
                self.store.release_in_flight, self.run_id, self.venue, order_pks
            )
        except LaneLostError:
            self.on_lost(self.venue)
            return
        except AuditError as exc:
            self.on_audit_failure(exc)
            return
        if self.to_confirm:
            return  # a confirm lane polls cancel_pending orders; these were never answered
        for order in released:
            if order.pk <= self._after_pk:  # behind the page cursor: queue it here
                self.retry_after(JobState(order, attempt=order.attempts), 0.0)
            else:
                self._exhausted = False  # ahead of it: the next page finds it
