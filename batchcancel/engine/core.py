"""What every lane of a venue shares: its pacer, work queue and view, the audit record of an
answer, and applying a policy Decision (pause, halt, retry, count). Lanes, bulk and sweep act
on the venue only through this.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from batchcancel.audit.ports import LaneStore
from batchcancel.audit.records import Answer
from batchcancel.audit.writer import AuditWriter
from batchcancel.config import VenueSettings
from batchcancel.drain_types import DrainOptions, LaneView, Transport
from batchcancel.engine.exchange import Exchange, Heard
from batchcancel.engine.policy import Decision, JobState, Rules
from batchcancel.engine.work import WorkQueue
from batchcancel.errors import AuditError
from batchcancel.outcomes import Outcome
from batchcancel.pacing import Pacer
from batchcancel.venues.base import OrderRow, Venue

__all__ = ["LaneCore", "row_of"]


def row_of(job: JobState) -> OrderRow:
    """The input row of a job's order."""
    order = job.order
    return OrderRow(order.venue, order.order_id, order.account_id, order.symbol)


class LaneCore:
    """One venue's lane state in this session."""

    def __init__(
        self,
        *,
        store: LaneStore,
        writer: AuditWriter,
        run_id: str,
        settings: VenueSettings,
        venue: Venue,
        options: DrainOptions,
        view: LaneView,
        rng: random.Random,
        open_transport: Callable[[int], AbstractAsyncContextManager[Transport]],
        on_audit_failure: Callable[[AuditError], None],
        on_lost: Callable[[str], None],
        more_coming: Callable[[], bool],
        busy: Callable[[], bool],
    ) -> None:
        self.store = store
        self.writer = writer
        self.run_id = run_id
        self.settings = settings
        self.venue = venue
        self.options = options
        self.clock = options.clock
        self.view = view
        self.name = view.venue
        self.rng = rng
        self.open_transport = open_transport
        self.on_audit_failure = on_audit_failure
        self.on_lost = on_lost
        self.more_coming = more_coming
        self.rules = Rules(
            venue=self.name,
            max_attempts=options.max_attempts,
            cooldown=settings.cooldown,
            backoff=settings.backoff,
            poll_every=options.poll_every,
        )
        self.pacer = Pacer(
            rate_limit=settings.rate_limit,
            period=settings.period,
            max_in_flight=settings.max_in_flight,
            clock=options.clock.monotonic,
            sleep=options.sleep,
        )
        self.queue = WorkQueue(
            store=store,
            run_id=run_id,
            venue=self.name,
            to_confirm=options.confirm,
            clock=options.clock,
            offload=options.offload,
            halted=lambda: self.pacer.halted,
            busy=busy,
            more_coming=more_coming,
            on_lost=on_lost,
            on_audit_failure=on_audit_failure,
        )

    def exchange(self, transport: Transport) -> Exchange:
        """The lane's sender over `transport`."""
        return Exchange(
            transport=transport,
            store=self.store,
            run_id=self.run_id,
            venue=self.name,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            lease=self.options.lease,
            clock=self.clock,
            offload=self.options.offload,
            on_lost=self.on_lost,
        )

    def halt(self, reason: str) -> None:
        """Send nothing more to this venue."""
        if not self.view.halted:
            self.view.halted = reason
        self.pacer.halt()
        self.queue.wake()

    def control(self, job: JobState | None, decision: Decision, *, count_retry: bool) -> None:
        """Apply what a Decision asks of the venue: count a 429, pause, halt, and queue the
        job's retry unless the lane has halted."""
        if decision.rate_limited:
            self.view.rate_limited += 1
        if decision.pause_venue_for is not None:
            self.pacer.pause(decision.pause_venue_for)
            if decision.rate_limited:
                self.view.paused_until = self.pacer.paused_until
        if decision.halt_reason:
            self.halt(decision.halt_reason)
        if decision.retry_in is not None and not self.pacer.halted:
            if count_retry:
                self.view.retries += 1
            if job is not None:
                self.queue.retry_after(job, decision.retry_in)

    def apply(
        self,
        job: JobState,
        decision: Decision,
        heard: Heard,
        detail: str,
        *,
        count_retry: bool = True,
    ) -> None:
        """Apply a Decision and record the answer it was made on."""
        self.control(job, decision, count_retry=count_retry)
        self.record(job, heard, decision.label, detail, decision.outcome, decision.reason)

    def record(
        self,
        job: JobState,
        heard: Heard,
        verdict: str,
        detail: str,
        outcome: Outcome | None,
        reason: str,
    ) -> None:
        """Queue an attempt's answer (`heard`, read as `verdict`) for the audit and count it
        in the progress view."""
        self.writer.answer(
            Answer(
                order_pk=job.order.pk,
                attempt=job.attempt,
                answered_at=heard.answered_at,
                http_status=heard.status,
                verdict=verdict,
                latency_ms=heard.latency_ms,
                detail=detail,
                outcome=outcome.value if outcome else None,
                reason=reason,
                venue=self.name,
            )
        )
        # A confirm poll that finds the cancel still pending has not finished the order.
        still_polling = self.options.confirm and outcome is Outcome.CANCEL_PENDING
        if outcome is not None and not still_polling:
            self.view.done += 1
            self.view.outcomes[outcome.value] += 1
