"""--all-open: cancel a venue's open orders with its cancel-all requests before anything else.

Every unsent order of the venue gets its attempt row (kind bulk) before the first request
leaves, so the run must be fully loaded first; each cancel-all page has its own write-ahead
row in the requests table, and a venue swept in an earlier session is never swept again.
Each order an answer lists takes the outcome it gives; the others are cancelled on their own
next. Orders listed that the input did not hold become orders of the run, so that the audit
shows everything the cancel-all touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, cast

from batchcancel.audit.records import BULK, SWEEP, Begin, SweptOrder
from batchcancel.drain_types import stamp
from batchcancel.engine.core import LaneCore, row_of
from batchcancel.engine.exchange import LANE_LOST, Exchange, Heard
from batchcancel.engine.policy import JobState, SweepTries, decide, decide_sweep
from batchcancel.engine.work import LOAD_POLL
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.pacing import Slot
from batchcancel.venues.base import (
    BulkAnswer,
    CancelRequest,
    OrderRow,
    SweepVenue,
    Verdict,
    VerdictKind,
)

__all__ = ["SWEEP_BODY_LIMIT", "SWEEP_TIMEOUT", "sweep"]

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


@dataclass
class _Swept:
    """What a venue's cancel-all requests said: per order listed, its verdict, the detail
    to record and the answer it came in; the failure that ended them early, if one did."""

    listed: dict[str, tuple[Verdict, str, Heard]] = field(default_factory=dict)
    symbols: dict[str, str] = field(default_factory=dict)
    failure: Verdict | None = None
    note: str = ""  # an answer that listed nothing, and why
    last: Heard = field(default_factory=Heard)


async def sweep(core: LaneCore, exchange: Exchange) -> None:
    """Cancel the venue's open orders with its cancel-all requests, then record each order's
    outcome (or queue it to be cancelled on its own)."""
    venue = cast(SweepVenue, core.venue)
    offload = core.options.offload
    if core.name in await offload(core.store.swept_venues, core.run_id):
        return  # a cancel-all went out in an earlier session: it is never sent again
    while core.more_coming() and not core.pacer.halted:
        await core.queue.wait(LOAD_POLL)
    found = []
    while (order := await core.queue.next_order()) is not None:
        found.append(order)
    rows = {
        order.pk: OrderRow(order.venue, order.order_id, order.account_id, order.symbol)
        for order in found
    }
    targets = venue.sweep_targets(list(rows.values()))
    slot = await core.pacer.grant() if targets else None
    if slot is None:
        core.queue.put_back(found)  # nothing to sweep with: send them one by one
        return
    jobs = [JobState(order, attempt=order.attempts + 1, fresh=False) for order in found]
    sent_at = stamp(core.clock)
    try:
        # In slices, so that the other lanes' attempt rows are not held up behind a
        # whole book's (the writer commits in arrival order).
        for start in range(0, len(jobs), SWEEP_BEGIN_SLICE):
            await core.writer.begin(
                *(
                    Begin(j.order.pk, j.attempt, sent_at, BULK, core.name)
                    for j in jobs[start : start + SWEEP_BEGIN_SLICE]
                )
            )
    except LaneLostError:
        slot.close()
        return
    except AuditError as exc:
        slot.close()
        core.on_audit_failure(exc)
        return
    core.view.sent += len(jobs)
    swept = await _send_sweeps(
        core, exchange, targets, slot, pages=len(jobs) // SWEEP_PAGE_GUESS + 2
    )
    failure = swept.failure
    refused = failure is not None and failure.kind is VerdictKind.AUTH_REFUSED
    for job in jobs:
        key = venue.sweep_key(row_of(job))
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
            core.record(job, swept.last, "transient", detail, None, "")
            core.queue.retry_after(job, 0.0)
            continue
        job, decision = decide(job, verdict, core.rules, core.rng)
        core.apply(job, decision, heard, detail)
    # Every order of the venue in the run, final ones included, is "in the input".
    known = await offload(core.store.venue_order_ids, core.run_id, core.name)
    keys = {venue.sweep_key(OrderRow(core.name, order_id)) for order_id in known}
    await _record_not_in_input(core, swept, keys, sent_at)


async def _send_sweeps(
    core: LaneCore, exchange: Exchange, targets: list[str], first: Slot, *, pages: int
) -> _Swept:
    """Send each cancel-all target, again while its answer is a full page (tanX's limit)
    but at most `pages` times. A transient answer is retried after a pause of the venue
    (Retry-After, else backoff), up to max_attempts in all; a refusal, or the last of
    those, ends the sweep. The first request's slot is already granted."""
    venue = cast(SweepVenue, core.venue)
    swept = _Swept()
    granted: Slot | None = first
    tries = SweepTries()
    for number, target in enumerate(targets, 1):
        page = 1
        while page <= pages:
            slot = granted or await core.pacer.grant()
            granted = None
            if slot is None:
                swept.failure = Verdict.transient(f"not sent: {core.view.halted}")
                return swept
            with slot:
                request = venue.build_sweep(target, now=core.clock.wall())
                try:
                    # Its own write-ahead record, before it leaves: it may cancel a book.
                    record = await core.options.offload(
                        core.store.begin_request,
                        core.run_id,
                        core.name,
                        kind=SWEEP,
                        target=f"{target} page {page}",
                    )
                except LaneLostError:
                    core.on_lost(core.name)
                    swept.failure = Verdict.transient(f"not sent: {LANE_LOST}")
                    return swept
                except AuditError as exc:
                    core.on_audit_failure(exc)
                    swept.failure = Verdict.transient("not sent: the audit database failed")
                    return swept
                answer, swept.last = await _send_sweep(core, exchange, request, slot)
            await _answer_request(core, record, answer, swept.last)
            if answer.whole is not None:
                tries, whole, decision = decide_sweep(tries, answer.whole, core.rules, core.rng)
                core.control(None, decision, count_retry=True)
                if decision.retry_in is None:
                    swept.failure = whole
                    return swept
                continue
            tag = f"[cancel-all {target} ({number}/{len(targets)}, page {page})]"
            for key, verdict in answer.per_order.items():
                swept.listed.setdefault(key, (verdict, f"{tag} {swept.last.detail}", swept.last))
            swept.symbols.update(answer.symbols)
            swept.note = answer.note or swept.note
            if not answer.more:
                break
            page += 1
    return swept


async def _send_sweep(
    core: LaneCore, exchange: Exchange, request: CancelRequest, slot: Slot
) -> tuple[BulkAnswer, Heard]:
    """Send one cancel-all request in a granted slot and read its answer."""
    reply, heard = await exchange.send(
        request,
        slot,
        # One request does the work of thousands: worth waiting for, even in a kill.
        timeout=max(core.settings.timeout, SWEEP_TIMEOUT),
        max_body=SWEEP_BODY_LIMIT + 1,
    )
    if reply is None:
        return BulkAnswer(Verdict.transient(heard.detail), {}), heard
    if len(reply.body) > SWEEP_BODY_LIMIT:
        # Never sent again for being unreadable: it may have cancelled the whole book.
        note = f"answer over {SWEEP_BODY_LIMIT >> 20} MiB, not read"
        return BulkAnswer(None, {}, note=note), heard
    return cast(SweepVenue, core.venue).classify_sweep(reply), heard


async def _answer_request(core: LaneCore, record: int, answer: BulkAnswer, heard: Heard) -> None:
    """Record what a cancel-all request heard (a failure to record stops the run)."""
    label = answer.whole.label if answer.whole is not None else "answered"
    detail = heard.detail or (answer.whole.reason if answer.whole is not None else "")
    try:
        await core.options.offload(
            core.store.answer_request,
            record,
            answered_at=heard.answered_at,
            http_status=heard.status,
            verdict=label,
            latency_ms=heard.latency_ms,
            detail=detail if answer.whole else f"listed {len(answer.per_order)}: {detail}",
        )
    except AuditError as exc:
        core.on_audit_failure(exc)


async def _record_not_in_input(
    core: LaneCore, swept: _Swept, keys: set[str], sent_at: datetime
) -> None:
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
    if not extras:
        return
    try:
        await core.options.offload(
            core.store.add_swept, core.run_id, core.name, extras, sent_at=sent_at
        )
    except LaneLostError:
        core.on_lost(core.name)
        return
    except AuditError as exc:
        core.on_audit_failure(exc)
        return
    core.view.total += len(extras)
    core.view.done += len(extras)
    core.view.outcomes.update(e.outcome for e in extras)
