"""One function per command that touches a run: plan, send, resume, summarise.

The CLI parses options and calls these; they return values and raise BatchCancelError, and
never print (progress goes through the callback the CLI passes in).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchcancel.audit.store import LOADING, AuditStore, PlannedOrder, RunInfo
from batchcancel.config import Settings
from batchcancel.drain_types import DrainOptions, LaneView
from batchcancel.errors import RunKeyTakenError, RunLockedError
from batchcancel.outcomes import EXIT_CODES, Outcome, RunStatus, run_status
from batchcancel.sources import NumberedRow, OrderTable
from batchcancel.venues import VENUES
from batchcancel.venues.base import Venue

__all__ = [
    "Plan",
    "Summary",
    "confirm_run",
    "plan_rows",
    "recorded_drain_options",
    "resume_run",
    "start_run",
    "summarise",
    "would_resume",
]

ViewCallback = Callable[[Mapping[str, LaneView]], None]
MAX_REASON = 300
DEFAULT_CONFIRM_TIMEOUT = 60.0  # seconds, when a run recorded none


@dataclass(frozen=True, slots=True)
class Summary:
    """The end of a session, as `--json` prints it (SPEC.md)."""

    run_id: str
    run_key: str | None
    status: RunStatus
    orders: int
    outcomes: dict[str, int]
    venues: dict[str, dict[str, int]]
    elapsed_s: float
    unfinished: int = 0
    stopped: str = ""
    halted: dict[str, str] = field(default_factory=dict)
    resumed: bool = False
    confirm: tuple[int, int] | None = None  # cancel_pending orders before and after confirming

    @property
    def exit_code(self) -> int:
        """SPEC exit code: 0 all good, 1 attention, 3 stopped early."""
        if self.status is RunStatus.PLANNED:
            return 1 if self.outcomes.get(Outcome.INVALID, 0) else 0
        return EXIT_CODES[self.status]

    def as_json(self) -> dict[str, Any]:
        """Exactly SPEC's `--json` keys."""
        return {
            "run_id": self.run_id,
            "run_key": self.run_key,
            "status": self.status.value,
            "orders": self.orders,
            "outcomes": self.outcomes,
            "venues": self.venues,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What a source holds, per venue: orders to send and invalid rows."""

    to_send: dict[str, int]  # orders per venue (before validation when `invalid` is -1)
    invalid: int  # -1: not known yet, rows are validated as they load
    duplicates: int


def plan_rows(chunk: Iterable[NumberedRow], *, only_venue: str | None) -> Iterator[PlannedOrder]:
    """Validate each row against its venue; a row that cannot be valid is planned invalid."""
    validators: dict[str, Venue] = {}
    for numbered in chunk:
        row = numbered.row
        reason = None
        if only_venue is not None and row.venue != only_venue:
            reason = f"row is for venue {row.venue!r} but --venue {only_venue} was given"
        elif row.venue not in VENUES:
            known = ", ".join(sorted(VENUES))
            reason = f"unknown venue {row.venue!r}; known venues: {known}"
        elif not row.order_id:
            reason = "order_id is empty"
        else:
            if row.venue not in validators:
                validators[row.venue] = VENUES[row.venue]({})
            reason = validators[row.venue].validate(row)
        if numbered.invalid_reason is not None:  # the source knows better (a float id)
            reason = numbered.invalid_reason
        if reason is not None and len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "..."  # a 1 MB id must not make a 1 MB reason
        yield PlannedOrder(
            numbered.seq, row.venue, row.order_id, row.account_id, row.symbol, reason
        )


def start_run(
    store: AuditStore,
    settings: Settings,
    table: OrderTable,
    *,
    command: str,
    run_key: str | None,
    only_venue: str | None,
    options: Mapping[str, Any],
    reason: str,
    command_line: str,
    dry_run: bool,
    drain_options: DrainOptions,
    views: ViewCallback | None = None,
    on_planned: Callable[[str, Plan], None] | None = None,
    confirm_options: DrainOptions | None = None,
    loading: RunInfo | None = None,
) -> Summary:
    """Record a new run with its orders, then (unless a dry run) send them.

    Sending starts once the first chunk of rows is recorded, while the rest load in the
    background: a million-row kill switch does not wait for its last row to send its first.
    `loading` is a run whose loading was interrupted: its missing rows are added now (rows
    are numbered, so none is added twice) and its recorded orders resume.
    """
    started = time.monotonic()
    if loading is not None:
        run_id = loading.id  # a run whose loading was interrupted: load the rest of the rows
        try:
            store.lock_run(run_id)  # only one process records the rest
        except RunLockedError:
            if store.dialect == "sqlite":
                raise  # one process per SQLite run: say which one holds it
            raise RunKeyTakenError(
                f"run key {run_key} belongs to run {run_id}, which another process is loading"
            ) from None
    else:
        run_id = store.create_run(
            command=command,
            run_key=run_key,
            source=table.description,
            options=options,
            reason=reason,
            command_line=command_line,
            dry_run=dry_run,
        )
    loaded = store.max_seq(run_id)
    to_send: dict[str, int] = {}
    invalid = 0
    chunks = table.chunks()

    def load(chunk: list[NumberedRow]) -> None:
        nonlocal invalid
        planned = [p for p in plan_rows(chunk, only_venue=only_venue) if p.seq > loaded]
        for p in planned:
            if p.invalid_reason is None:
                to_send[p.venue] = to_send.get(p.venue, 0) + 1
            else:
                invalid += 1
        store.add_orders(run_id, planned)

    def finish_loading() -> None:
        store.set_totals(
            run_id, orders_total=store.order_count(run_id), duplicates=table.duplicates
        )

    try:
        if dry_run:
            for chunk in chunks:
                load(chunk)
            finish_loading()
            if on_planned is not None:
                on_planned(run_id, Plan(to_send, invalid, table.duplicates))
            store.set_run_status(run_id, RunStatus.PLANNED.value)
            store.unlock_run(run_id)
            return summarise(store, store.find_run(run_id), elapsed=time.monotonic() - started)
        if on_planned is not None:
            on_planned(run_id, Plan(table.venue_counts(), -1, table.duplicates))
        first = next(chunks, None)
        if first is not None:
            load(first)
    except BaseException:
        store.unlock_run(run_id)  # _work below releases it from here on
        raise

    def load_rest(stopping: Callable[[], bool]) -> None:
        for chunk in chunks:
            if stopping():
                return  # the run stays `loading`: the same --run-key loads the rest later
            load(chunk)
        finish_loading()

    return _work(
        store,
        settings,
        run_id,
        command,
        command_line,
        drain_options,
        views,
        started,
        False,
        confirm_options=confirm_options,
        loader=load_rest,
    )


def resume_run(
    store: AuditStore,
    settings: Settings,
    run: RunInfo,
    *,
    command_line: str,
    drain_options: DrainOptions,
    views: ViewCallback | None = None,
    confirm_options: DrainOptions | None = None,
) -> Summary:
    """Continue a run: send only orders without a final outcome."""
    started = time.monotonic()
    return _work(
        store,
        settings,
        run.id,
        "resume",
        command_line,
        drain_options,
        views,
        started,
        True,
        confirm_options=confirm_options,
    )


def recorded_drain_options(
    run: RunInfo, *, deadline: float | None, max_attempts: int | None, lease: float
) -> tuple[DrainOptions, DrainOptions | None]:
    """How a resume drains `run` (and confirms, if the run asked for it): with the options
    the run was started with. Only the deadline, the attempts and the lease may be given anew.
    A cancel-all stays allowed if it was, but the lane sends none where one already went."""
    recorded = run.options
    attempts = max_attempts or int(recorded.get("max_attempts") or 5)
    drain_options = DrainOptions(
        max_attempts=attempts,
        deadline=deadline,
        lease=lease,
        claim_all=run.command == "kill",
        bulk=bool(recorded.get("bulk")),
        all_open=bool(recorded.get("all_open")),
    )
    confirm_options = (
        DrainOptions(
            confirm=True,
            deadline=float(recorded.get("confirm_timeout") or DEFAULT_CONFIRM_TIMEOUT),
            max_attempts=attempts,
        )
        if recorded.get("confirm")
        else None
    )
    return drain_options, confirm_options


def would_resume(store: AuditStore, run: RunInfo) -> tuple[Summary, dict[str, int]]:
    """What a resume of `run` would send, per venue, read without changing anything; and
    the run's summary as a dry run reports it (status planned)."""
    to_send = store.venues_with_work(run.id)
    summary = dataclasses.replace(summarise(store, run), status=RunStatus.PLANNED)
    return summary, to_send


def confirm_run(
    store: AuditStore,
    settings: Settings,
    run: RunInfo,
    *,
    command_line: str,
    confirm_options: DrainOptions,
    views: ViewCallback | None = None,
) -> Summary:
    """Poll the order status of the run's cancel_pending orders until final or timed out."""
    started = time.monotonic()
    return _work(
        store,
        settings,
        run.id,
        "confirm",
        command_line,
        None,
        views,
        started,
        True,
        confirm_options=confirm_options,
    )


def _work(
    store: AuditStore,
    settings: Settings,
    run_id: str,
    command: str,
    command_line: str,
    drain_options: DrainOptions | None,
    views: ViewCallback | None,
    started: float,
    resumed: bool,
    *,
    confirm_options: DrainOptions | None = None,
    loader: Callable[[Callable[[], bool]], None] | None = None,
) -> Summary:
    """Lock the run, send (drain_options) and/or confirm (confirm_options), summarise.

    `loader` records the rest of the run's orders while sending goes on."""
    if store.dialect == "sqlite":
        store.lock_run(run_id)  # one process per SQLite run; PostgreSQL workers share lanes
    session_id = store.start_session(run_id, command=command, command_line=command_line)
    status = RunStatus.ATTENTION
    # Imported here, not at the top: the network stack is not needed to plan and announce.
    from batchcancel.engine import drain

    try:
        stopped = ""
        halted: dict[str, str] = {}
        lost: set[str] = set()
        if drain_options is not None:
            result = asyncio.run(
                drain(store, run_id, settings, drain_options, views=views, loader=loader)
            )
            stopped = result.stopped
            halted = {name: v.halted for name, v in result.lanes.items() if v.halted}
            lost = result.lost
        confirm = None
        if confirm_options is not None and not stopped and not lost:
            before = _pending_count(store, run_id)
            asyncio.run(drain(store, run_id, settings, confirm_options, views=views))
            confirm = (before, _pending_count(store, run_id))
        summary = summarise(
            store,
            store.find_run(run_id),
            elapsed=time.monotonic() - started,
            stopped=stopped,
            halted=halted,
            resumed=resumed,
        )
        summary = dataclasses.replace(summary, confirm=confirm)
        status = summary.status
        if not lost:  # a lane another worker took over is still being worked: not ours to say
            store.set_run_status(run_id, status.value)
        return summary
    finally:
        try:
            store.finish_session(session_id, status.value)
        finally:
            store.unlock_run(run_id)


def _pending_count(store: AuditStore, run_id: str) -> int:
    return sum(
        counts.get(Outcome.CANCEL_PENDING.value, 0) for counts in store.counts(run_id).values()
    )


def summarise(
    store: AuditStore,
    run: RunInfo,
    *,
    elapsed: float = 0.0,
    stopped: str = "",
    halted: Mapping[str, str] | None = None,
    resumed: bool = False,
) -> Summary:
    """Counts of a run's orders by outcome and venue, and its status."""
    counts = store.counts(run.id)
    loading = run.status == LOADING  # rows not recorded yet count as unfinished
    outcomes = {o.value: 0 for o in Outcome}
    venues: dict[str, dict[str, int]] = {}
    unfinished = orders = 0
    for venue, by_outcome in sorted(counts.items()):
        venues[venue] = {o.value: 0 for o in Outcome}
        for outcome, n in by_outcome.items():
            orders += n
            if outcome:
                outcomes[outcome] += n
                venues[venue][outcome] += n
            else:
                unfinished += n
    if run.dry_run and run.status == RunStatus.PLANNED.value:
        status = RunStatus.PLANNED
    else:
        status = run_status(
            outcomes, unfinished=unfinished + int(loading), stopped_early=bool(stopped)
        )
    return Summary(
        run_id=run.id,
        run_key=run.run_key,
        status=status,
        orders=orders,
        outcomes=outcomes,
        venues=venues,
        elapsed_s=elapsed,
        unfinished=unfinished,
        stopped=stopped,
        halted=dict(halted or {}),
        resumed=resumed,
    )
