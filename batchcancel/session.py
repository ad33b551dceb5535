"""One working session on a run: record (or finish loading) its orders, lock it, drain,
confirm, and set its status. Returns a Summary; never prints, never decides which run (what
it has to say goes through the caller's Watch: log, live view, metrics).

runs.py decides new run vs resume vs join; these functions carry the decision out. Their
signatures are the public ones (`start_run`, `resume_run`, `confirm_run`), also re-exported
by batchcancel.commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from batchcancel.audit.records import RunInfo
from batchcancel.audit.store import AuditStore
from batchcancel.config import Settings
from batchcancel.drain_types import DrainOptions, LaneView
from batchcancel.errors import RunKeyTakenError, RunLockedError
from batchcancel.log import Log
from batchcancel.outcomes import RunStatus
from batchcancel.planning import Plan, plan_rows
from batchcancel.sources import NumberedRow, OrderTable
from batchcancel.summary import Summary, pending_count, summarise

__all__ = ["Monitoring", "ViewCallback", "Watch", "confirm_run", "resume_run", "start_run"]

ViewCallback = Callable[[Mapping[str, LaneView]], None]
Loader = Callable[[Callable[[], bool]], None]


class Monitoring(Protocol):
    """The metrics and webhook of a command (metrics.Monitor)."""

    def attach(self, store: AuditStore, run_id: str) -> None:
        """The run is known."""

    def starting(self, payload: Mapping[str, Any]) -> None:
        """A kill starts."""


@dataclass(frozen=True, slots=True)
class Watch:
    """How a command reports while it works: its log, its live view (opened for the settings
    in use; it also feeds the metrics), its metrics, and the command line it records."""

    log: Log
    display: Callable[[Settings], AbstractContextManager[ViewCallback]]
    command_line: str
    monitoring: Monitoring | None = None

    def attach(self, store: AuditStore, run_id: str) -> None:
        """Tell the metrics which run they are about."""
        if self.monitoring is not None:
            self.monitoring.attach(store, run_id)


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
            store.seal(run_id)
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
        command=command,
        command_line=command_line,
        drain_options=drain_options,
        confirm_options=confirm_options,
        views=views,
        started=started,
        resumed=False,
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
    return _work(
        store,
        settings,
        run.id,
        command="resume",
        command_line=command_line,
        drain_options=drain_options,
        confirm_options=confirm_options,
        views=views,
        started=time.monotonic(),
        resumed=True,
    )


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
    return _work(
        store,
        settings,
        run.id,
        command="confirm",
        command_line=command_line,
        drain_options=None,
        confirm_options=confirm_options,
        views=views,
        started=time.monotonic(),
        resumed=True,
    )


def _work(
    store: AuditStore,
    settings: Settings,
    run_id: str,
    *,
    command: str,
    command_line: str,
    drain_options: DrainOptions | None,
    confirm_options: DrainOptions | None,
    views: ViewCallback | None,
    started: float,
    resumed: bool,
    loader: Loader | None = None,
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
            before = pending_count(store, run_id)
            asyncio.run(drain(store, run_id, settings, confirm_options, views=views))
            confirm = (before, pending_count(store, run_id))
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
    finally:
        try:
            store.finish_session(session_id, status.value)  # the session's last fact; sealed
        finally:
            store.unlock_run(run_id)
    # The digest printed is the one the session left, its end included (SPEC).
    return dataclasses.replace(summary, digest=store.digest(run_id))
