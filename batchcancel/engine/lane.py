"""The cancel lane of one venue: the dispatch loop, its in-flight requests, and one attempt
(write-ahead row committed, then the request, then the policy's Decision applied). A bulk
request or the --all-open cancel-all goes through bulk.py and sweep.py; `--from-venues`
runs the dispatch loop once per round of books.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from batchcancel.audit.records import CANCEL, Begin
from batchcancel.drain_types import BookView, Transport, stamp
from batchcancel.engine import bulk, sweep
from batchcancel.engine.books import BookWalk
from batchcancel.engine.core import LaneCore, row_of
from batchcancel.engine.exchange import Exchange
from batchcancel.engine.policy import JobState, decide
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.pacing import Slot
from batchcancel.venues.base import Verdict

__all__ = ["CancelLane"]


class CancelLane:
    """Sends every unsent order of a venue (in bulk requests of `bulk_size` where > 0; after
    a cancel-all when `sweeps`), then waits for the answers."""

    def __init__(self, core: LaneCore, *, bulk_size: int = 0, sweeps: bool = False) -> None:
        self.core = core
        self.bulk_size = bulk_size
        self.sweeps = sweeps
        self._in_flight: set[asyncio.Task[None]] = set()

    def busy(self) -> bool:
        """Requests are in flight: their answers may queue retries."""
        return bool(self._in_flight)

    async def run(
        self,
        transport: Transport,
        book: BookView | None = None,
        others_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """Send every unsent order of the venue, then wait for the answers; with a `book`
        (`--from-venues`), list the venue's own book and go on until it is flat."""
        core = self.core
        exchange = core.exchange(transport)
        if self.sweeps:
            await sweep.sweep(core, exchange)
        scope = core.options.books
        if book is not None and scope is not None:
            walk = BookWalk(core, exchange, scope, book, others_busy)
            await walk.run(lambda: self._dispatch(exchange))
        else:
            await self._dispatch(exchange)

    async def _dispatch(self, exchange: Exchange) -> None:
        """Send whatever the run holds unsent for the venue, then wait for the answers."""
        core = self.core
        while not core.pacer.halted:
            job = await core.queue.next_job()
            if job is None:
                break
            jobs = [job]
            if self.bulk_size and job.fresh:
                while len(jobs) < self.bulk_size and (order := await core.queue.next_order()):
                    jobs.append(JobState(order, attempt=order.attempts))
            slot = await core.pacer.grant()
            if slot is None:
                break
            task = asyncio.create_task(self._attempt(jobs, slot, exchange))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight))

    async def _attempt(self, jobs: list[JobState], slot: Slot, exchange: Exchange) -> None:
        try:
            with slot:
                if len(jobs) == 1:
                    await self._send_one(jobs[0], slot, exchange)
                else:
                    await bulk.send_bulk(self.core, exchange, jobs, slot)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.discard(task)  # before waking the dispatcher, which counts them
            self.core.queue.wake()

    async def _send_one(self, job: JobState, slot: Slot, exchange: Exchange) -> None:
        core = self.core
        order = job.order
        request = core.venue.build_cancel(row_of(job), now=core.clock.wall())  # fresh signature
        job = dataclasses.replace(job, attempt=job.attempt + 1)
        try:
            await core.writer.begin(
                Begin(order.pk, job.attempt, stamp(core.clock), CANCEL, core.name)
            )
        except LaneLostError:
            return  # the writer told the session; the lane is halted
        except AuditError as exc:
            core.on_audit_failure(exc)
            return
        core.view.sent += 1
        reply, heard = await exchange.send(request, slot)
        verdict = Verdict.transient(heard.detail) if reply is None else core.venue.classify(reply)
        job, decision = decide(job, verdict, core.rules, core.rng)
        core.apply(job, decision, heard, heard.detail or verdict.reason)
