"""The async run: one lane per venue, write-ahead audit, retries, stops.

Each lane streams its venue's unsent orders from the audit store in pages (never a task per
order), paces them through its Pacer, and sends each one only after its attempt row is
committed. Transient answers are retried with exponential backoff and jitter, honouring
Retry-After; a 429 pauses the whole venue; an auth refusal halts the venue and leaves its
remaining orders `skipped`. A stop (deadline, SIGINT/SIGTERM) halts every lane: in-flight
requests finish or time out and are recorded, the rest is left resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import signal
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, cast

from batchcancel.audit.store import (
    BULK,
    CANCEL,
    CONFIRM,
    CONFIRMED_PREFIX,
    SWEEP,
    Answer,
    AuditStore,
    Begin,
    OrderToSend,
    SweptOrder,
    utcnow,
)
from batchcancel.audit.writer import AuditWriter
from batchcancel.config import Settings, VenueSettings
from batchcancel.drain_types import DrainOptions, LaneView
from batchcancel.errors import AuditError, LaneLostError, TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.pacing import Pacer, Slot, safety_margin
from batchcancel.transport import MAX_BODY_BYTES, open_session, send
from batchcancel.venues import get_venue
from batchcancel.venues.base import (
    BulkAnswer,
    BulkVenue,
    CancelRequest,
    OrderRow,
    Reply,
    SweepVenue,
    Venue,
    Verdict,
    VerdictKind,
    excerpt,
    supports_bulk,
    supports_sweep,
)

__all__ = ["DrainResult", "drain"]

PAGE_SIZE: Final = 2000
MAX_BACKOFF: Final = 30.0
RATE_LIMIT_ROUNDS: Final = 4  # 429s an order may meet per allowed attempt before it is failed
HEARTBEAT_EVERY: Final = 10.0
CLAIM_EVERY: Final = 0.5  # seconds between looks for a free lane
LOAD_POLL: Final = 0.2  # seconds between looks for newly loaded orders
# A cancel-all target is sent again while its answer is a full page, at most
# (orders of the venue // this) + 2 times: a book far larger than the input cannot keep
# the lane sweeping; what is left of the input is then cancelled order by order.
SWEEP_PAGE_GUESS: Final = 100
SWEEP_TIMEOUT: Final = 30.0  # seconds, at least, for a cancel-all answer
SWEEP_BEGIN_SLICE: Final = 5000  # attempt rows per commit while a cancel-all is written ahead
# A cancel-all answer is read and parsed whole only up to this size (about 200,000 orders at
# ZebPay; parsing costs about 4x its size in memory, see docs/benchmarks.md). A larger one is
# not parsed: the orders it would list are cancelled one by one, which finds them closed.
SWEEP_BODY_LIMIT: Final = 16 * 1024 * 1024
LANE_LOST: Final = "lost the lane lease to another worker"


@dataclass
class _Job:
    """An order being worked in this session."""

    order: OrderToSend
    attempt: int  # number of the last attempt recorded
    tries: int = 0  # transient answers in this session, 429s excluded
    limited: int = 0  # 429s in this session
    warned: bool = False  # an escalate-on-repeat answer was seen once
    fresh: bool = True  # not attempted yet in this session: may go in a bulk request


@dataclass
class _Heard:
    """What came back for one request: shared by the orders it carried."""

    status: int | None = None
    detail: str = ""
    answered_at: datetime = field(default_factory=utcnow)
    latency_ms: float = 0.0


@dataclass
class _Swept:
    """What a venue's cancel-all requests said: per order listed, its verdict, the detail
    to record and the answer it came in; the failure that ended them early, if one did."""

    listed: dict[str, tuple[Verdict, str, _Heard]] = field(default_factory=dict)
    symbols: dict[str, str] = field(default_factory=dict)
    failure: Verdict | None = None
    note: str = ""  # an answer that listed nothing, and why
    last: _Heard = field(default_factory=_Heard)


@dataclass
class DrainResult:
    """How the session ended."""

    stopped: str = ""  # deadline / signal reason, empty if it ran to the end
    lanes: dict[str, LaneView] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)  # lanes another worker took over: theirs now


class _Lane:
    """One venue's sending loop."""

    def __init__(
        self,
        *,
        store: AuditStore,
        writer: AuditWriter,
        run_id: str,
        settings: VenueSettings,
        venue: Venue,
        options: DrainOptions,
        view: LaneView,
        rng: random.Random,
        on_audit_failure: Callable[[AuditError], None],
        on_lost: Callable[[str], None],
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.on_lost = on_lost
        # What the previous holder left in flight, re-sent once its request timeout is over.
        self._takeover: tuple[float, list[int]] | None = None
        self.more_coming = more_coming
        self.writer = writer
        self.run_id = run_id
        self.settings = settings
        self.venue = venue
        self.options = options
        self.view = view
        self.rng = rng
        self.on_audit_failure = on_audit_failure
        self.pacer = Pacer(
            rate_limit=settings.rate_limit,
            period=settings.period,
            max_in_flight=settings.max_in_flight,
        )
        self._retries: list[tuple[float, int, _Job]] = []  # (due monotonic, tiebreak, job)
        self._page: list[OrderToSend] = []
        self._after_pk = 0
        self._exhausted = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._counter = 0
        self._bulk_size = (
            cast(BulkVenue, venue).bulk_size
            if options.bulk and not options.confirm and supports_bulk(venue)
            else 0
        )
        self._sweeps = options.all_open and not options.confirm and supports_sweep(venue)

    def take_over_later(self, wait: float, order_pks: list[int]) -> None:
        """The previous holder may still be sending these orders: re-send them only once
        `wait` seconds (its request timeout) have passed."""
        if order_pks:
            self._takeover = (time.monotonic() + wait, order_pks)

    def wake(self) -> None:
        """Look for work again (new orders were recorded)."""
        self._wake.set()

    def halt(self, reason: str) -> None:
        """Send nothing more to this venue."""
        if not self.view.halted:
            self.view.halted = reason
        self.pacer.halt()
        self._wake.set()

    async def run(self) -> None:
        """Send every unsent order of the venue, then wait for the answers."""
        async with open_session(max_connections=self.settings.max_in_flight) as session:
            self._session = session
            if self._sweeps:
                await self._sweep()
            while not self.pacer.halted:
                job = await self._next_job()
                if job is None:
                    break
                jobs = [job]
                if self._bulk_size and job.fresh:
                    while len(jobs) < self._bulk_size and (order := await self._next_order()):
                        jobs.append(_Job(order, attempt=order.attempts))
                slot = await self.pacer.grant()
                if slot is None:
                    break
                task = asyncio.create_task(
                    self._attempt(job, slot) if len(jobs) == 1 else self._bulk_attempt(jobs, slot)
                )
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if self._in_flight:
                await asyncio.gather(*self._in_flight)

    async def _next_job(self) -> _Job | None:
        """A due retry, else the next unsent order; None when nothing is left to send."""
        while not self.pacer.halted:
            now = time.monotonic()
            if self._takeover is not None and self._takeover[0] <= now:
                await self._release_taken_over()
                continue
            if self._retries and self._retries[0][0] <= now:
                return heapq.heappop(self._retries)[2]
            # Whether loading is over is read before the look: rows recorded while the look
            # runs (the loader's last ones) are then found by the next look, not missed.
            loading = self.more_coming()
            order = await self._next_order()
            if order is not None:
                return _Job(order, attempt=order.attempts)
            if not self._retries and not self._in_flight and not loading and not self._takeover:
                return None
            self._wake.clear()
            due = [self._retries[0][0]] if self._retries else []
            due += [self._takeover[0]] if self._takeover else []
            timeout = min(due) - now if due else None
            if loading:
                self._exhausted = False  # look again: the loader is still adding orders
                timeout = LOAD_POLL if timeout is None else min(timeout, LOAD_POLL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        return None

    async def _release_taken_over(self) -> None:
        """The previous holder's in-flight orders become this lane's to send."""
        assert self._takeover is not None
        _, order_pks = self._takeover
        self._takeover = None
        try:
            released = await asyncio.to_thread(
                self.store.release_in_flight, self.run_id, self.view.venue, order_pks
            )
        except LaneLostError:
            self.on_lost(self.view.venue)
            return
        except AuditError as exc:
            self.on_audit_failure(exc)
            return
        if self.options.confirm:
            return  # a confirm lane polls cancel_pending orders; these were never answered
        for order in released:
            if order.pk <= self._after_pk:  # behind the page cursor: queue it here
                self._retry_after(_Job(order, attempt=order.attempts), 0.0)
            else:
                self._exhausted = False  # ahead of it: the next page finds it

    async def _next_order(self) -> OrderToSend | None:
        if not self._page and not self._exhausted:
            try:
                self._page = await asyncio.to_thread(
                    self.store.pending_page,
                    self.run_id,
                    self.view.venue,
                    after_pk=self._after_pk,
                    limit=PAGE_SIZE,
                    to_confirm=self.options.confirm,
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

    async def _attempt(self, job: _Job, slot: Slot) -> None:
        try:
            with slot:
                await self._send_and_record(job, slot)
        finally:
            self._done()

    async def _bulk_attempt(self, jobs: list[_Job], slot: Slot) -> None:
        try:
            with slot:
                await self._send_bulk_and_record(jobs, slot)
        finally:
            self._done()

    def _done(self) -> None:
        """A request task ends: free its slot and let the dispatcher look again."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.discard(task)  # before waking the dispatcher, which counts them
        self._wake.set()

    async def _send_bulk_and_record(self, jobs: list[_Job], slot: Slot) -> None:
        """One bulk request for fresh orders; each gets its own attempt row, written first.
        Orders the answer does not account for are cancelled on their own next."""
        venue = cast(BulkVenue, self.venue)
        rows = [
            OrderRow(j.order.venue, j.order.order_id, j.order.account_id, j.order.symbol)
            for j in jobs
        ]
        request = venue.build_bulk_cancel(rows, now=time.time())
        sent_at = utcnow()
        for job in jobs:
            job.attempt += 1
            job.fresh = False
        tag = f"bulk {self.view.venue}-{jobs[0].order.pk}.{jobs[0].attempt} of {len(jobs)}"
        venue_name = self.view.venue
        try:
            await self.writer.begin(
                *(Begin(j.order.pk, j.attempt, sent_at, BULK, venue_name) for j in jobs)
            )
        except LaneLostError:
            return  # the writer told the session; the lane is halted
        except AuditError as exc:
            self.on_audit_failure(exc)
            return
        self.view.sent += len(jobs)
        reply, heard = await self._exchange(request, slot)
        answer = (
            venue.classify_bulk(reply)
            if reply is not None
            else BulkAnswer(Verdict.transient(heard.detail), {})
        )
        for job in jobs:
            verdict = answer.whole or answer.per_order.get(job.order.order_id)
            if verdict is None:
                # Not accounted for by the bulk answer: cancel it on its own, at once.
                outcome, reason, label = None, "", "transient"
                note = answer.note or "not in the bulk answer"
                job_detail = f"[{tag}] {note}: cancelling it on its own"
                self._retry_after(job, 0.0)
            else:
                outcome, reason = self._decide(job, verdict)
                label = verdict.label
                job_detail = f"[{tag}] {heard.detail or verdict.reason}"
            self._record(job, heard, label, job_detail, outcome, reason)

    async def _sweep(self) -> None:
        """--all-open: cancel the venue's open orders with its cancel-all requests first.

        Every unsent order of the venue gets its attempt row (kind bulk) before the first
        request leaves, so the run must be fully loaded first. Each order an answer lists
        takes the outcome it gives; the others are cancelled on their own next. Orders listed
        that the input did not hold become orders of the run, so that the audit shows
        everything the cancel-all touched.
        """
        venue = cast(SweepVenue, self.venue)
        if self.view.venue in await asyncio.to_thread(self.store.swept_venues, self.run_id):
            return  # a cancel-all went out in an earlier session: it is never sent again
        while self.more_coming() and not self.pacer.halted:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=LOAD_POLL)
        found: list[OrderToSend] = []
        while (order := await self._next_order()) is not None:
            found.append(order)
        rows = {
            order.pk: OrderRow(order.venue, order.order_id, order.account_id, order.symbol)
            for order in found
        }
        targets = venue.sweep_targets(list(rows.values()))
        slot = await self.pacer.grant() if targets else None
        if slot is None:
            self._page = found[::-1]  # nothing to sweep with: send them one by one
            return
        jobs = [_Job(order, attempt=order.attempts + 1, fresh=False) for order in found]
        sent_at = utcnow()
        try:
            # In slices, so that the other lanes' attempt rows are not held up behind a
            # whole book's (the writer commits in arrival order).
            for start in range(0, len(jobs), SWEEP_BEGIN_SLICE):
                await self.writer.begin(
                    *(
                        Begin(j.order.pk, j.attempt, sent_at, BULK, self.view.venue)
                        for j in jobs[start : start + SWEEP_BEGIN_SLICE]
                    )
                )
        except LaneLostError:
            slot.close()
            return
        except AuditError as exc:
            slot.close()
            self.on_audit_failure(exc)
            return
        self.view.sent += len(jobs)
        swept = await self._send_sweeps(targets, slot, pages=len(jobs) // SWEEP_PAGE_GUESS + 2)
        failure = swept.failure
        refused = failure is not None and failure.kind is VerdictKind.AUTH_REFUSED
        for job in jobs:
            key = venue.sweep_key(rows[job.order.pk])
            if key in swept.listed:
                verdict, detail, heard = swept.listed[key]
            elif refused and failure is not None:
                verdict, detail, heard = failure, swept.last.detail, swept.last
            else:
                # Not listed (filled, closed, unknown, another market), or the sweep failed:
                # the order is cancelled on its own, at once.
                why = failure.reason if failure is not None else "not in the cancel-all answers"
                if swept.note and failure is None:
                    why = f"{why} ({swept.note})"
                detail = f"[cancel-all] {why}: cancelling it on its own"
                self._record(job, swept.last, "transient", detail, None, "")
                self._retry_after(job, 0.0)
                continue
            outcome, reason = self._decide(job, verdict)
            self._record(job, heard, verdict.label, detail, outcome, reason)
        # Every order of the venue in the run, final ones included, is "in the input".
        known = await asyncio.to_thread(self.store.venue_order_ids, self.run_id, self.view.venue)
        keys = {venue.sweep_key(OrderRow(self.view.venue, order_id)) for order_id in known}
        await self._record_not_in_input(swept, keys, sent_at)

    async def _send_sweeps(self, targets: list[str], first: Slot, *, pages: int) -> _Swept:
        """Send each cancel-all target, again while its answer is a full page (tanX's limit)
        but at most `pages` times. A transient answer is retried after a pause of the venue
        (Retry-After, else backoff), up to max_attempts in all; a refusal, or the last of
        those, ends the sweep. The first request's slot is already granted."""
        venue = cast(SweepVenue, self.venue)
        swept = _Swept()
        granted: Slot | None = first
        tries, warned = 0, False
        for number, target in enumerate(targets, 1):
            page = 1
            while page <= pages:
                slot = granted or await self.pacer.grant()
                granted = None
                if slot is None:
                    swept.failure = Verdict.transient(f"not sent: {self.view.halted}")
                    return swept
                with slot:
                    request = venue.build_sweep(target, now=time.time())
                    try:
                        # Its own write-ahead record, before it leaves: it may cancel a book.
                        record = await asyncio.to_thread(
                            self.store.begin_request,
                            self.run_id,
                            self.view.venue,
                            kind=SWEEP,
                            target=f"{target} page {page}",
                        )
                    except LaneLostError:
                        self.on_lost(self.view.venue)
                        swept.failure = Verdict.transient(f"not sent: {LANE_LOST}")
                        return swept
                    except AuditError as exc:
                        self.on_audit_failure(exc)
                        swept.failure = Verdict.transient("not sent: the audit database failed")
                        return swept
                    answer, swept.last = await self._send_sweep(request, slot)
                await self._answer_request(record, answer, swept.last)
                if (whole := answer.whole) is not None:
                    tries += 1
                    if whole.escalate_on_repeat and warned:
                        whole = Verdict.auth_refused(whole.reason)
                    warned = warned or whole.escalate_on_repeat
                    if whole.rate_limited:
                        self.view.rate_limited += 1
                        self.pacer.pause(_or(whole.retry_after, self.settings.cooldown))
                        self.view.paused_until = self.pacer.paused_until
                    if whole.kind is VerdictKind.AUTH_REFUSED or tries >= self.options.max_attempts:
                        swept.failure = whole
                        return swept
                    if not whole.rate_limited:
                        self.pacer.pause(_or(whole.retry_after, self._backoff(tries)))
                    self.view.retries += 1
                    continue
                tag = f"[cancel-all {target} ({number}/{len(targets)}, page {page})]"
                for key, verdict in answer.per_order.items():
                    swept.listed.setdefault(
                        key, (verdict, f"{tag} {swept.last.detail}", swept.last)
                    )
                swept.symbols.update(answer.symbols)
                swept.note = answer.note or swept.note
                if not answer.more:
                    break
                page += 1
        return swept

    async def _answer_request(self, record: int, answer: BulkAnswer, heard: _Heard) -> None:
        """Record what a cancel-all request heard (a failure to record stops the run)."""
        label = answer.whole.label if answer.whole is not None else "answered"
        detail = heard.detail or (answer.whole.reason if answer.whole is not None else "")
        try:
            await asyncio.to_thread(
                self.store.answer_request,
                record,
                answered_at=heard.answered_at,
                http_status=heard.status,
                verdict=label,
                latency_ms=heard.latency_ms,
                detail=detail if answer.whole else f"listed {len(answer.per_order)}: {detail}",
            )
        except AuditError as exc:
            self.on_audit_failure(exc)

    async def _record_not_in_input(self, swept: _Swept, keys: set[str], sent_at: datetime) -> None:
        """Orders the cancel-all listed that the input did not: recorded as orders of the run."""
        extras = [
            SweptOrder(
                order_id=key,
                symbol=swept.symbols.get(key, ""),
                outcome=verdict.outcome.value,
                reason=f"not in the input: {verdict.reason} (--all-open)",
                http_status=heard.status,
                answered_at=heard.answered_at,
                latency_ms=heard.latency_ms,
                detail=detail,
            )
            for key, (verdict, detail, heard) in swept.listed.items()
            if key not in keys and verdict.outcome is not None
        ]
        if extras:
            try:
                await asyncio.to_thread(
                    self.store.add_swept, self.run_id, self.view.venue, extras, sent_at=sent_at
                )
            except LaneLostError:
                self.on_lost(self.view.venue)
                return
            except AuditError as exc:
                self.on_audit_failure(exc)
                return
            self.view.total += len(extras)
            self.view.done += len(extras)
            self.view.outcomes.update(e.outcome for e in extras)

    async def _send_sweep(self, request: CancelRequest, slot: Slot) -> tuple[BulkAnswer, _Heard]:
        """Send one cancel-all request in a granted slot and read its answer."""
        reply, heard = await self._exchange(
            request,
            slot,
            # One request does the work of thousands: worth waiting for, even in a kill.
            timeout=max(self.settings.timeout, SWEEP_TIMEOUT),
            max_body=SWEEP_BODY_LIMIT + 1,
        )
        if reply is None:
            return BulkAnswer(Verdict.transient(heard.detail), {}), heard
        if len(reply.body) > SWEEP_BODY_LIMIT:
            # Never sent again for being unreadable: it may have cancelled the whole book.
            note = f"answer over {SWEEP_BODY_LIMIT >> 20} MiB, not read"
            return BulkAnswer(None, {}, note=note), heard
        return cast(SweepVenue, self.venue).classify_sweep(reply), heard

    async def _exchange(
        self,
        request: CancelRequest,
        slot: Slot,
        *,
        timeout: float | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> tuple[Reply | None, _Heard]:
        """Send a request in a granted slot; the reply (None when no answer came: timeout,
        dropped connection) and what to record of it. The slot's window learns the answer."""
        started = time.monotonic()
        heard = _Heard()
        if not await self._lane_is_ours():
            slot.answered()
            heard.detail = f"not sent: {LANE_LOST}"
            heard.answered_at = utcnow()
            return None, heard
        try:
            reply: Reply | None = await send(
                self._session,
                self.settings.base_url,
                request,
                timeout=self.settings.timeout if timeout is None else timeout,
                max_body=max_body,
            )
        except TransientVenueError as exc:
            reply = None
            heard.detail = str(exc)
        finally:
            slot.answered()
        if reply is not None:
            heard.status = reply.status
            heard.detail = excerpt(reply.body)
        heard.answered_at = utcnow()
        heard.latency_ms = (time.monotonic() - started) * 1000
        return reply, heard

    async def _lane_is_ours(self) -> bool:
        """Checked just before each request leaves: the lease is fresh by this process's
        clock, or (after a stall) the database renews it at our epoch. Else the lane is lost."""
        venue = self.view.venue
        if self.store.lease_is_fresh(self.run_id, venue):
            return True
        try:
            held = await asyncio.to_thread(
                self.store.renew_lanes, self.run_id, [venue], lease=self.options.lease
            )
        except AuditError:
            held = set()  # cannot prove the lane is ours: send nothing
        if venue in held:
            return True
        self.on_lost(venue)
        return False

    async def _send_and_record(self, job: _Job, slot: Slot) -> None:
        order = job.order
        row = OrderRow(order.venue, order.order_id, order.account_id, order.symbol)
        confirming = self.options.confirm
        now = time.time()  # a fresh signature and timestamp per attempt
        request = (
            self.venue.build_status(row, now=now)
            if confirming
            else self.venue.build_cancel(row, now=now)
        )
        if request is None:  # no status request for this order: nothing to send
            return
        job.attempt += 1
        kind = CONFIRM if confirming else CANCEL
        try:
            await self.writer.begin(Begin(order.pk, job.attempt, utcnow(), kind, self.view.venue))
        except LaneLostError:
            job.attempt -= 1
            return  # the writer told the session; the lane is halted
        except AuditError as exc:
            job.attempt -= 1
            self.on_audit_failure(exc)
            return
        self.view.sent += 1
        reply, heard = await self._exchange(request, slot)
        if reply is None:
            verdict = Verdict.transient(heard.detail)
        elif confirming:
            verdict = self.venue.classify_status(reply)
        else:
            verdict = self.venue.classify(reply)
        escalated = verdict.escalate_on_repeat and job.warned and not confirming
        outcome, reason = (
            self._decide_confirm(job, verdict) if confirming else self._decide(job, verdict)
        )
        label = str(VerdictKind.AUTH_REFUSED) if escalated else verdict.label
        self._record(job, heard, label, heard.detail or verdict.reason, outcome, reason)

    def _record(
        self,
        job: _Job,
        heard: _Heard,
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
                venue=self.view.venue,
            )
        )
        # A confirm poll that finds the cancel still pending has not finished the order.
        still_polling = self.options.confirm and outcome is Outcome.CANCEL_PENDING
        if outcome is not None and not still_polling:
            self.view.done += 1
            self.view.outcomes[outcome.value] += 1

    def _retry_after(self, job: _Job, delay: float) -> None:
        """Send this order again once `delay` seconds have passed."""
        self._counter += 1
        heapq.heappush(self._retries, (time.monotonic() + delay, self._counter, job))

    def _decide_confirm(self, job: _Job, verdict: Verdict) -> tuple[Outcome, str]:
        """After a status answer: confirmed, closed otherwise, or still pending (poll again)."""
        pending = Outcome.CANCEL_PENDING
        if verdict.kind is VerdictKind.AUTH_REFUSED:
            self.halt(_stop_reason(verdict))
            return pending, f"not confirmed: {_stop_reason(verdict)}"
        if verdict.outcome is not None and verdict.outcome is not pending:
            return verdict.outcome, f"{CONFIRMED_PREFIX}{verdict.reason}"
        if verdict.outcome is None:  # transient: the status is unknown
            job.tries += 1
            if verdict.rate_limited:
                self.pacer.pause(_or(verdict.retry_after, self.settings.cooldown))
            if job.tries >= self.options.max_attempts:
                return pending, f"not confirmed: {verdict.reason}"
            delay = _or(verdict.retry_after, self._backoff(job.tries))
        else:
            job.limited += 1  # counts polls that found the cancel still pending
            delay = min(5.0, self.options.poll_every * 2 ** (job.limited - 1))
        if not self.pacer.halted:
            self._retry_after(job, delay)
        return pending, "cancel still pending at the venue"

    def _decide(self, job: _Job, verdict: Verdict) -> tuple[Outcome | None, str]:
        """The order's outcome after this answer (None: retry later or leave resumable)."""
        if verdict.kind is VerdictKind.AUTH_REFUSED or (verdict.escalate_on_repeat and job.warned):
            self.halt(_stop_reason(verdict))
            if verdict.redirect:  # SPEC: says nothing about the order; resumable once fixed
                return Outcome.SKIPPED, f"not cancelled: {self.view.venue} {verdict.reason}"
            return Outcome.SKIPPED, f"not sent: {self.view.venue} refused the credentials"
        if verdict.outcome is not None:
            return verdict.outcome, verdict.reason
        job.warned = job.warned or verdict.escalate_on_repeat
        delay: float
        if verdict.rate_limited:
            job.limited += 1
            self.view.rate_limited += 1
            self.pacer.pause(_or(verdict.retry_after, self.settings.cooldown))
            self.view.paused_until = self.pacer.paused_until
            delay = 0.0  # the venue pause holds it back
        else:
            job.tries += 1
            delay = _or(verdict.retry_after, self._backoff(job.tries))
        if job.tries >= self.options.max_attempts or job.limited >= (
            RATE_LIMIT_ROUNDS * self.options.max_attempts
        ):
            return Outcome.FAILED, f"gave up after {job.attempt} attempts: {verdict.reason}"
        if self.pacer.halted:
            return None, ""  # left for the stop to mark skipped
        self.view.retries += 1
        self._retry_after(job, delay)
        return None, ""

    def _backoff(self, tries: int) -> float:
        """Exponential backoff with full jitter around it (0.5x to 1.5x)."""
        base = min(MAX_BACKOFF, self.settings.backoff * 2 ** (tries - 1))
        return float(base * self.rng.uniform(0.5, 1.5))


async def drain(
    store: AuditStore,
    run_id: str,
    settings: Settings,
    options: DrainOptions,
    *,
    views: Callable[[Mapping[str, LaneView]], None] | None = None,
    loader: Callable[[Callable[[], bool]], None] | None = None,
) -> DrainResult:
    """Send every unsent order of the run (or confirm every pending cancel); how it ended.

    `loader(stopping)` records the rest of the run's orders in a worker thread meanwhile;
    lanes keep looking for new orders until it returns. Raises AuditError if the audit
    database fails (nothing is sent after that).
    """
    return await _Session(store, run_id, settings, options, views, loader).run()


class _Session:
    """One process's drain of a run: takes venue lanes as their leases allow and runs them.

    Each venue is sent to by one worker at a time, holding its lane lease (renewed while it
    works; taken over by another worker once a dead worker's lease expires). That keeps each
    venue's rate limit whole across workers and gives every order to exactly one of them.
    """

    def __init__(
        self,
        store: AuditStore,
        run_id: str,
        settings: Settings,
        options: DrainOptions,
        views: Callable[[Mapping[str, LaneView]], None] | None,
        loader: Callable[[Callable[[], bool]], None] | None = None,
    ) -> None:
        self.store = store
        self.loader = loader
        self.loaded = asyncio.Event()
        self.load_error: BaseException | None = None
        self.run_id = run_id
        self.settings = settings
        self.options = options
        self.views = views
        self.result = DrainResult()
        self.rng = random.Random(options.seed)
        self.writer = AuditWriter(store, run_id, on_lost=self.lane_lost)
        self.lanes: dict[str, _Lane] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.completed: set[str] = set()
        self.failures: list[AuditError] = []

    def stop_all(self, reason: str) -> None:
        if not self.result.stopped:
            self.result.stopped = reason
        for lane in self.lanes.values():
            lane.halt(reason)

    def lane_lost(self, venue: str) -> None:
        """Another worker holds the venue's lane now: send nothing more there, change none
        of its orders (no settling, no release), leave the run's status to that worker."""
        self.result.lost.add(venue)
        lane = self.lanes.get(venue)
        if lane is not None:
            lane.halt(LANE_LOST)

    def audit_failed(self, exc: AuditError) -> None:
        self.failures.append(exc)
        self.stop_all("the audit database failed")

    async def run(self) -> DrainResult:
        loop = asyncio.get_running_loop()
        self.writer.start()
        installed: list[signal.Signals] = []
        previous = {}
        if self.options.handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    previous[signum] = signal.getsignal(signum)
                    loop.add_signal_handler(
                        signum, self.stop_all, f"stopped by {signal.Signals(signum).name}"
                    )
                    installed.append(signum)
        deadline = (
            loop.call_later(
                self.options.deadline,
                self.stop_all,
                f"deadline of {self.options.deadline:g} s passed",
            )
            if self.options.deadline is not None
            else None
        )
        heartbeat = asyncio.create_task(self._heartbeat())
        loading = asyncio.create_task(self._load())
        reporter = (
            asyncio.create_task(_report(self.views, self.result.lanes)) if self.views else None
        )
        try:
            await self._take_lanes_until_done()
            if self.running:
                await asyncio.wait(self.running.values())
                await self._finish_lanes()
            await loading
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
                handler = previous.get(signum)
                if callable(handler) or isinstance(handler, int):
                    signal.signal(signum, handler)  # what the caller had before the run
            if deadline is not None:
                deadline.cancel()
            heartbeat.cancel()
            if reporter is not None:
                reporter.cancel()
            await self.writer.close()  # raises the AuditError if writing failed
        if self.failures:
            raise self.failures[0]
        if self.load_error is not None:
            raise self.load_error
        if self.views:
            self.views(self.result.lanes)
        return self.result

    async def _load(self) -> None:
        """Run the loader in a thread; lanes wait for its orders until it is done."""
        try:
            if self.loader is not None:
                stopping = lambda: bool(self.result.stopped)  # noqa: E731
                await asyncio.to_thread(self.loader, stopping)
            else:
                # A worker that joined a run another live process is still loading keeps
                # looking for its new orders until that process is done recording them.
                while not self.result.stopped and await asyncio.to_thread(
                    self.store.loading_elsewhere, self.run_id
                ):
                    await asyncio.sleep(CLAIM_EVERY)
        except AuditError as exc:
            self.audit_failed(exc)
        except Exception as exc:  # surfaced after the lanes have stopped
            self.load_error = exc
            self.stop_all("loading the orders failed")
        finally:
            self.loaded.set()
            for lane in self.lanes.values():
                lane.wake()

    def more_coming(self) -> bool:
        """True while orders are still being recorded."""
        return not self.loaded.is_set()

    async def _take_lanes_until_done(self) -> None:
        last_claim = -1e9
        while not self.result.stopped:
            # Read before the look, as in _Lane._next_job: a venue whose first orders are
            # recorded while the look runs is then found next time round, not left unsent.
            loaded = self.loaded.is_set()
            work = await asyncio.to_thread(
                self.store.venues_with_work, self.run_id, to_confirm=self.options.confirm
            )
            remaining = set(work) - self.completed - set(self.running)
            taken: dict[str, float] = {}
            if remaining:
                # A confirm pass polls every venue it can: it takes leases like a sender
                # (SPEC), so it never relabels another worker's in-flight attempts.
                spread = (
                    not self.options.claim_all
                    and not self.options.confirm
                    and self.store.dialect != "sqlite"
                )
                due = not self.running or time.monotonic() - last_claim >= CLAIM_EVERY
                limit = (1 if due else 0) if spread else len(remaining)
                taken = await asyncio.to_thread(
                    self.store.claim_lanes,
                    self.run_id,
                    remaining,
                    limit=limit,
                    lease=self.options.lease,
                    request_timeout=self._request_timeouts(remaining),
                )
                if taken:
                    last_claim = time.monotonic()
            for venue, wait in taken.items():
                await self._start_lane(venue, work[venue], wait)
            if self.options.confirm and remaining - set(taken):
                # A lane another worker holds is not polled: its holder is still sending
                # there (and confirms its own orders when its run asks for it).
                busy = await asyncio.to_thread(self.store.leased_by_others, self.run_id)
                for venue in sorted((remaining - set(taken)) & busy):
                    view = LaneView(venue, total=work[venue])
                    view.halted = f"not confirmed: another worker holds the {venue} lane"
                    self.result.lanes[venue] = view
                    self.completed.add(venue)
            if not self.running and not taken and loaded:
                busy = set()
                if remaining:
                    busy = await asyncio.to_thread(self.store.leased_by_others, self.run_id)
                if not remaining & busy:
                    return  # nothing left that anyone is working on
            if self.running:
                await asyncio.wait(
                    self.running.values(), timeout=CLAIM_EVERY, return_when=FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(CLAIM_EVERY)  # other workers hold what is left
            await self._finish_lanes()

    def _request_timeouts(self, venues: set[str]) -> dict[str, float]:
        """How long one of our requests to each venue may take: what a worker taking the lane
        over from us waits before re-sending what we left in flight."""
        timeouts = {}
        for name in venues:
            venue_settings = self.settings.venues.get(name)
            if venue_settings is not None:
                longest = venue_settings.timeout
                if self.options.all_open:  # a cancel-all request may take longer
                    longest = max(longest, SWEEP_TIMEOUT)
                timeouts[name] = longest + safety_margin(longest)
        return timeouts

    async def _start_lane(self, venue_name: str, total: int, wait: float = 0.0) -> None:
        view = LaneView(venue_name, total=total)
        self.result.lanes[venue_name] = view
        venue_settings = self.settings.venues.get(venue_name)
        problem = _unusable(venue_name, venue_settings)
        venue = (
            get_venue(venue_name)(venue_settings.credentials)
            if venue_settings is not None and not problem
            else None
        )
        if venue is not None and self.options.confirm:
            if venue.build_status(OrderRow(venue_name, "1", "1"), now=0) is None:
                view.halted = f"{venue_name} documents no order-status endpoint"
                await self._leave_lane(venue_name, view.halted)
                return
        elif venue is not None:
            problem = venue.credentials_problem() or ""
        if venue is None or venue_settings is None or problem:
            view.halted = problem or f"unknown venue {venue_name!r}"
            await self._leave_lane(venue_name, view.halted)
            return
        in_flight: list[int] = []
        try:
            # This worker now holds the lane: whatever a previous holder left in flight is
            # closed (once its request timeout is over, if it may still be alive), and a
            # sending session tries its failed / skipped orders afresh.
            if wait > 0:
                in_flight = await asyncio.to_thread(
                    self.store.in_flight_orders, self.run_id, venue_name
                )
                if not self.options.confirm:
                    await asyncio.to_thread(self.store.reset_resumable, self.run_id, venue_name)
            else:
                await asyncio.to_thread(
                    self.store.recover_in_flight,
                    self.run_id,
                    venue=venue_name,
                    reset_resumable=not self.options.confirm,
                )
        except LaneLostError:
            self.lane_lost(venue_name)
            view.halted = LANE_LOST
            self.completed.add(venue_name)
            return
        lane = _Lane(
            store=self.store,
            writer=self.writer,
            run_id=self.run_id,
            settings=venue_settings,
            venue=venue,
            options=self.options,
            view=view,
            rng=self.rng,
            on_audit_failure=self.audit_failed,
            on_lost=self.lane_lost,
            more_coming=self.more_coming,
        )
        lane.take_over_later(wait, in_flight)
        if not self.options.confirm and venue_settings.rate_limit > 0:
            # Requests another process sent lately still count in the venue's window.
            last = await asyncio.to_thread(self.store.last_sent_by_others, self.run_id, venue_name)
            if last is not None:
                age = (utcnow() - last).total_seconds()
                lane.pacer.pause(
                    max(0.0, venue_settings.period + safety_margin(venue_settings.period) - age)
                )
        self.lanes[venue_name] = lane
        if self.result.stopped:
            lane.halt(self.result.stopped)
        self.running[venue_name] = asyncio.create_task(lane.run(), name=f"lane-{venue_name}")

    async def _finish_lanes(self) -> None:
        """Settle and release the lanes whose task ended."""
        for name, task in list(self.running.items()):
            if not task.done():
                continue
            del self.running[name]
            task.result()  # a bug in a lane surfaces here, not silently
            await self._leave_lane(name, self.lanes[name].view.halted)

    async def _leave_lane(self, name: str, halted: str) -> None:
        """This worker is done with a venue: what a halt left unsent becomes `skipped`, and
        the lane is released for others."""
        self.completed.add(name)
        with contextlib.suppress(AuditError, LaneLostError):  # a failure surfaces at close
            await self.writer.flush()  # the lane's last answers, written under its lease
        if name in self.result.lost:
            return  # the lane is another worker's now: its orders are theirs to settle
        if halted and not self.options.confirm:  # a confirm pass leaves outcomes as they are
            try:
                await asyncio.to_thread(
                    self.store.settle_unsent,
                    self.run_id,
                    name,
                    Outcome.SKIPPED,
                    f"not sent: {halted}",
                )
            except LaneLostError:
                self.lane_lost(name)
                return
        await asyncio.to_thread(self.store.release_lanes, self.run_id, [name])

    async def _heartbeat(self) -> None:
        every = min(HEARTBEAT_EVERY, self.options.lease / 3)
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(AuditError):
                await asyncio.to_thread(self.store.heartbeat, self.run_id)
                if not self.running:
                    continue
                renewing = set(self.running)
                held = await asyncio.to_thread(
                    self.store.renew_lanes, self.run_id, renewing, lease=self.options.lease
                )
                for name in (renewing - held) & set(self.running):
                    # Another worker took the lane: our lease had run out. Stop sending at once.
                    self.lane_lost(name)


def _stop_reason(verdict: Verdict) -> str:
    """Why an answer stops the venue: a redirect (the base_url is wrong) or refused credentials."""
    if verdict.redirect:
        return f"stopped: {verdict.reason}"
    return f"credentials refused: {verdict.reason}"


def _or(value: float | None, default: float) -> float:
    """`value` unless it is missing; a Retry-After of 0 means "now", not "use the default"."""
    return default if value is None else value


def _unusable(name: str, settings: VenueSettings | None) -> str:
    if settings is None:
        return f"unknown venue {name!r}"
    if not settings.base_url:
        return f"no base_url for {name}: set [venues.{name}] base_url in the venues config"
    return ""


async def _report(
    views: Callable[[Mapping[str, LaneView]], None], lanes: Mapping[str, LaneView]
) -> None:
    while True:
        views(lanes)
        await asyncio.sleep(0.25)
