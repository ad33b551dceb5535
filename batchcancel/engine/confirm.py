"""The confirm lane of one venue: polls the order status of its cancel_pending orders until
each is confirmed, found closed otherwise, or its polls run out (no bulk, no cancel-all)."""

from __future__ import annotations

import asyncio
import dataclasses

from batchcancel.audit.records import CONFIRM, Begin
from batchcancel.drain_types import Transport, stamp
from batchcancel.engine.core import LaneCore, row_of
from batchcancel.engine.exchange import Exchange
from batchcancel.engine.policy import JobState, decide_confirm
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.pacing import Slot
from batchcancel.venues.base import Verdict

__all__ = ["ConfirmLane"]


class ConfirmLane:
    """Polls every cancel_pending order of a venue, then waits for the answers."""

    def __init__(self, core: LaneCore) -> None:
        self.core = core
        self._in_flight: set[asyncio.Task[None]] = set()

    def busy(self) -> bool:
        """Polls are in flight: their answers may queue more polls."""
        return bool(self._in_flight)

    async def run(self, transport: Transport) -> None:
        """Poll until nothing is left to poll."""
        core = self.core
        exchange = core.exchange(transport)
        while not core.pacer.halted:
            job = await core.queue.next_job()
            if job is None:
                break
            slot = await core.pacer.grant()
            if slot is None:
                break
            task = asyncio.create_task(self._attempt(job, slot, exchange))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.gather(*self._in_flight)

    async def _attempt(self, job: JobState, slot: Slot, exchange: Exchange) -> None:
        try:
            with slot:
                await self._poll(job, slot, exchange)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.discard(task)
            self.core.queue.wake()

    async def _poll(self, job: JobState, slot: Slot, exchange: Exchange) -> None:
        core = self.core
        order = job.order
        request = core.venue.build_status(row_of(job), now=core.clock.wall())
        if request is None:  # no status request for this order: nothing to send
            return
        job = dataclasses.replace(job, attempt=job.attempt + 1)
        try:
            await core.writer.begin(
                Begin(order.pk, job.attempt, stamp(core.clock), CONFIRM, core.name)
            )
        except LaneLostError:
            return  # the writer told the session; the lane is halted
        except AuditError as exc:
            core.on_audit_failure(exc)
            return
        core.view.sent += 1
        reply, heard = await exchange.send(request, slot)
        verdict = (
            Verdict.transient(heard.detail) if reply is None else core.venue.classify_status(reply)
        )
        job, decision = decide_confirm(job, verdict, core.rules, core.rng)
        core.apply(job, decision, heard, heard.detail or verdict.reason, count_retry=False)
