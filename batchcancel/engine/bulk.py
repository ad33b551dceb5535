"""One bulk-cancel request for fresh orders of a venue: each order's attempt row is written
first, and the venue's BulkAnswer fans out to the orders (those it does not account for are
cancelled on their own next)."""

from __future__ import annotations

import dataclasses
from typing import cast

from batchcancel.audit.records import BULK, Begin
from batchcancel.drain_types import stamp
from batchcancel.engine.core import LaneCore, row_of
from batchcancel.engine.exchange import Exchange
from batchcancel.engine.policy import JobState, decide
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.pacing import Slot
from batchcancel.venues.base import BulkAnswer, BulkVenue, Verdict

__all__ = ["send_bulk"]


async def send_bulk(core: LaneCore, exchange: Exchange, jobs: list[JobState], slot: Slot) -> None:
    """Send one bulk request for `jobs` in `slot` and apply each order's Decision."""
    venue = cast(BulkVenue, core.venue)
    request = venue.build_bulk_cancel([row_of(j) for j in jobs], now=core.clock.wall())
    sent_at = stamp(core.clock)
    jobs = [dataclasses.replace(j, attempt=j.attempt + 1, fresh=False) for j in jobs]
    tag = f"bulk {core.name}-{jobs[0].order.pk}.{jobs[0].attempt} of {len(jobs)}"
    try:
        await core.writer.begin(
            *(Begin(j.order.pk, j.attempt, sent_at, BULK, core.name) for j in jobs)
        )
    except LaneLostError:
        return  # the writer told the session; the lane is halted
    except AuditError as exc:
        core.on_audit_failure(exc)
        return
    core.view.sent += len(jobs)
    reply, heard = await exchange.send(request, slot)
    answer = (
        venue.classify_bulk(reply)
        if reply is not None
        else BulkAnswer(Verdict.transient(heard.detail), {})
    )
    for job in jobs:
        verdict = answer.whole or answer.per_order.get(job.order.order_id)
        if verdict is None:
            # Not accounted for by the bulk answer: cancel it on its own, at once.
            note = answer.note or "not in the bulk answer"
            core.queue.retry_after(job, 0.0)
            core.record(
                job, heard, "transient", f"[{tag}] {note}: cancelling it on its own", None, ""
            )
            continue
        job, decision = decide(job, verdict, core.rules, core.rng)
        core.apply(job, decision, heard, f"[{tag}] {heard.detail or verdict.reason}")
