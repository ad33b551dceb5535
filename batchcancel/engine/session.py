"""One process's drain of a run: takes venue lanes as their leases allow and runs them.

Each venue is sent to by one worker at a time, holding its lane lease (renewed while it
works; taken over by another worker once a dead worker's lease expires). That keeps each
venue's rate limit whole across workers and gives every order to exactly one of them. The
session owns the claim loop, starting, finishing and leaving lanes (a takeover waits out the
previous holder's request timeout; a confirm pass leaves a lane another worker holds alone),
the loader thread, the heartbeat and lease renewal, and the stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, cast

from batchcancel.audit.ports import BookStore, LaneStore
from batchcancel.audit.records import BookRecord
from batchcancel.audit.writer import AuditWriter
from batchcancel.config import Settings, VenueSettings
from batchcancel.drain_types import (
    BookView,
    DrainOptions,
    DrainResult,
    LaneView,
    Transport,
    stamp,
)
from batchcancel.engine.confirm import ConfirmLane
from batchcancel.engine.core import LaneCore
from batchcancel.engine.exchange import LANE_LOST
from batchcancel.engine.lane import CancelLane
from batchcancel.engine.stops import Stops
from batchcancel.engine.sweep import SWEEP_TIMEOUT
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.outcomes import Outcome
from batchcancel.pacing import safety_margin
from batchcancel.venues import get_venue
from batchcancel.venues.base import BulkVenue, supports_bulk, supports_list, supports_sweep

__all__ = ["Session", "drain"]

HEARTBEAT_EVERY: Final = 10.0
CLAIM_EVERY: Final = 0.5  # seconds between looks for a free lane
REPORT_EVERY: Final = 0.25  # seconds between progress callbacks
KILL_LOOK_EVERY: Final = 0.5  # seconds between looks for another run's kill on our venues

_Lane = CancelLane | ConfirmLane


async def drain(
    store: LaneStore,
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
    return await Session(store, run_id, settings, options, views, loader).run()


class Session:
    """The lanes of one process's drain, and everything that starts and ends them."""

    def __init__(
        self,
        store: LaneStore,
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
        self.clock = options.clock
        self.offload = options.offload
        self.views = views
        self.result = DrainResult()
        self.rng = options.rng if options.rng is not None else random.Random(options.seed)
        self.writer = AuditWriter(store, run_id, on_lost=self.lane_lost, offload=options.offload)
        self.lanes: dict[str, LaneCore] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.completed: set[str] = set()
        self.failures: list[AuditError] = []

    def stop_all(self, reason: str) -> None:
        """A stop (deadline, signal, audit failure): every lane halts."""
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
        """Writing or reading the audit failed: stop everything, raise it at the end."""
        self.failures.append(exc)
        self.stop_all("the audit database failed")

    async def run(self) -> DrainResult:
        """Take lanes until no work is left that anyone is working on; how it ended."""
        self.writer.start()
        stops = Stops(
            self.stop_all,
            deadline=self.options.deadline,
            handle_signals=self.options.handle_signals,
            sleep=self.options.sleep,
        )
        heartbeat = asyncio.create_task(self._heartbeat())
        yielding = None if self.options.kill else asyncio.create_task(self._yield_to_kills())
        loading = asyncio.create_task(self._load())
        reporter = asyncio.create_task(self._report()) if self.views else None
        try:
            async with stops:
                await self._take_lanes_until_done()
                if self.running:
                    await asyncio.wait(self.running.values())
                    await self._finish_lanes()
                await loading
        finally:
            heartbeat.cancel()
            if yielding is not None:
                yielding.cancel()
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
                await asyncio.to_thread(self.loader, stopping)  # the loader blocks: a thread
            else:
                # A worker that joined a run another live process is still loading keeps
                # looking for its new orders until that process is done recording them.
                while not self.result.stopped and await self.offload(
                    self.store.loading_elsewhere, self.run_id
                ):
                    await self.options.sleep(CLAIM_EVERY)
        except AuditError as exc:
            self.audit_failed(exc)
        except Exception as exc:  # surfaced after the lanes have stopped
            self.load_error = exc
            self.stop_all("loading the orders failed")
        finally:
            self.loaded.set()
            for lane in self.lanes.values():
                lane.queue.wake()

    def more_coming(self) -> bool:
        """True while orders are still being recorded."""
        return not self.loaded.is_set()

    async def _take_lanes_until_done(self) -> None:
        confirm = self.options.confirm
        while not self.result.stopped:
            # Read before the look, as in WorkQueue.next_job: a venue whose first orders are
            # recorded while the look runs is then found next time round, not left unsent.
            loaded = self.loaded.is_set()
            work = await self.offload(self.store.venues_with_work, self.run_id, to_confirm=confirm)
            books = self.options.books
            if books is not None and not confirm:
                for name in sorted(books.venues):  # listed even with no order of the input
                    work.setdefault(name, 0)
            remaining = set(work) - self.completed - set(self.running)
            taken: dict[str, float] = {}
            if remaining:
                # A confirm pass polls every venue it can: it takes leases like a sender
                # (SPEC), so it never relabels another worker's in-flight attempts. Every
                # free lane at once, less what the store leaves for other workers present.
                taken = await self.offload(
                    self.store.claim_lanes,
                    self.run_id,
                    remaining,
                    limit=len(remaining),
                    lease=self.options.lease,
                    request_timeout=self._request_timeouts(remaining),
                )
            for venue, wait in taken.items():
                await self._start_lane(venue, work[venue], wait)
            if confirm and remaining - set(taken):
                # A lane another worker holds is not polled: its holder is still sending
                # there (and confirms its own orders when its run asks for it).
                busy = await self.offload(self.store.leased_by_others, self.run_id)
                for venue in sorted((remaining - set(taken)) & busy):
                    view = LaneView(venue, total=work[venue])
                    view.halted = f"not confirmed: another worker holds the {venue} lane"
                    self.result.lanes[venue] = view
                    self.completed.add(venue)
            if not self.running and not taken and loaded:
                busy = set()
                if remaining:
                    busy = await self.offload(self.store.leased_by_others, self.run_id)
                if not remaining & busy:
                    return  # nothing left that anyone is working on
            if self.running:
                await asyncio.wait(
                    self.running.values(), timeout=CLAIM_EVERY, return_when=FIRST_COMPLETED
                )
            else:
                await self.options.sleep(CLAIM_EVERY)  # other workers hold what is left
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
        confirm = self.options.confirm
        view = LaneView(venue_name, total=total)
        self.result.lanes[venue_name] = view
        venue_settings = self.settings.venues.get(venue_name)
        problem = _unusable(venue_name, venue_settings)
        venue = (
            get_venue(venue_name)(venue_settings.credentials)
            if venue_settings is not None and not problem
            else None
        )
        if venue is not None and confirm:
            if not venue.has_status:  # declared by the adapter (VENUES.md "Confirm")
                view.halted = f"{venue_name} documents no order-status endpoint"
                await self._leave_lane(venue_name, view.halted)
                return
        elif venue is not None:
            problem = venue.credentials_problem() or ""
        book = self._book(venue_name)
        if book is not None and venue is not None and not problem and not supports_list(venue):
            problem = f"{venue_name} has no list of open orders"
        if venue is None or venue_settings is None or problem:
            view.halted = problem or f"unknown venue {venue_name!r}"
            if book is not None:
                await self._unlisted(venue_name, book, f"not listed: {view.halted}")
            await self._leave_lane(venue_name, view.halted)
            return
        in_flight: list[int] = []
        try:
            # This worker now holds the lane: whatever a previous holder left in flight is
            # closed (once its request timeout is over, if it may still be alive), and a
            # sending session tries its failed / skipped orders afresh.
            if wait > 0:
                in_flight = await self.offload(self.store.in_flight_orders, self.run_id, venue_name)
                if not confirm:
                    await self.offload(self.store.reset_resumable, self.run_id, venue_name)
            else:
                await self.offload(
                    self.store.recover_in_flight,
                    self.run_id,
                    venue=venue_name,
                    reset_resumable=not confirm,
                )
        except LaneLostError:
            self.lane_lost(venue_name)
            view.halted = LANE_LOST
            self.completed.add(venue_name)
            return
        lanes: list[_Lane] = []  # the lane, once built (the core asks whether it is busy)
        core = LaneCore(
            store=self.store,
            writer=self.writer,
            run_id=self.run_id,
            settings=venue_settings,
            venue=venue,
            options=self.options,
            view=view,
            rng=self.rng,
            open_transport=self._open_transport(),
            on_audit_failure=self.audit_failed,
            on_lost=self.lane_lost,
            more_coming=self.more_coming,
            busy=lambda: any(lane.busy() for lane in lanes),
        )
        lane: _Lane
        if confirm:
            lane = ConfirmLane(core)
        else:
            bulk_size = (
                cast(BulkVenue, venue).bulk_size
                if self.options.bulk and supports_bulk(venue)
                else 0
            )
            lane = CancelLane(
                core, bulk_size=bulk_size, sweeps=self.options.all_open and supports_sweep(venue)
            )
        lanes.append(lane)
        core.queue.take_over_later(wait, in_flight)
        if not confirm and venue_settings.rate_limit > 0:
            # Requests another process sent lately still count in the venue's window.
            last = await self.offload(self.store.last_sent_by_others, self.run_id, venue_name)
            if last is not None:
                age = (stamp(self.clock) - last).total_seconds()
                period = venue_settings.period
                core.pacer.pause(max(0.0, period + safety_margin(period) - age))
        self.lanes[venue_name] = core
        if self.result.stopped:
            core.halt(self.result.stopped)
        self.running[venue_name] = asyncio.create_task(
            _run_lane(lane, core, venue_settings, book, lambda: self._books_busy(venue_name)),
            name=f"lane-{venue_name}",
        )

    async def _unlisted(self, venue_name: str, book: BookView, why: str) -> None:
        """A venue in the books' scope that cannot be listed at all: not flat, and why."""
        book.detail = why
        record = BookRecord(venue=venue_name, verdict=book.verdict, started_at=stamp(self.clock))
        with contextlib.suppress(AuditError, LaneLostError):  # a failure surfaces at close
            await self.offload(
                cast(BookStore, self.store).record_book,
                self.run_id,
                dataclasses.replace(record, detail=why),
            )

    def _books_busy(self, venue_name: str) -> bool:
        """Another book of this session is still being worked (not flat yet)."""
        return any(
            name != venue_name and name in self.running and view.verdict != "flat"
            for name, view in self.result.books.items()
        )

    def _book(self, venue_name: str) -> BookView | None:
        """The venue's book view when this session cancels from its own book."""
        books = self.options.books
        if books is None or self.options.confirm or venue_name not in books.venues:
            return None
        return self.result.books.setdefault(venue_name, BookView())

    def _open_transport(self) -> Callable[[int], AbstractAsyncContextManager[Transport]]:
        if self.options.open_transport is not None:
            return self.options.open_transport
        # Imported here, not at the top: planning and announcing need no network stack.
        from batchcancel.transport import open_transport

        return open_transport

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
                await self.offload(
                    self.store.settle_unsent,
                    self.run_id,
                    name,
                    Outcome.SKIPPED,
                    f"not sent: {halted}",
                )
            except LaneLostError:
                self.lane_lost(name)
                return
        await self.offload(self.store.release_lanes, self.run_id, [name])

    async def _heartbeat(self) -> None:
        every = min(HEARTBEAT_EVERY, self.options.lease / 3)
        while True:
            await self.options.sleep(every)
            with contextlib.suppress(AuditError):
                await self.offload(self.store.heartbeat, self.run_id)
                if not self.running:
                    continue
                renewing = set(self.running)
                held = await self.offload(
                    self.store.renew_lanes, self.run_id, renewing, lease=self.options.lease
                )
                for name in sorted((renewing - held) & set(self.running)):
                    # Another worker took the lane: our lease had run out. Stop sending at once.
                    self.lane_lost(name)

    async def _yield_to_kills(self) -> None:
        """SPEC "A kill takes precedence": while a live kill of another run holds one of our
        venues, our lane there sends nothing (the kill gets the venue's whole limit and draws
        no 429s through us); it goes on when the kill ends. Both are said on stderr."""
        look = getattr(self.store, "venues_held_by_other_runs", None)
        if look is None:
            return  # a store of one run (the benchmarks' in-memory one) has no other runs
        held_by_kill: set[str] = set()
        while True:
            await self.options.sleep(KILL_LOOK_EVERY)
            if not self.running and not held_by_kill:
                continue
            try:
                held: dict[str, list[tuple[str, str]]] = await self.offload(look, self.run_id)
            except AuditError:
                continue  # looked again next time; a failing audit stops the run elsewhere
            kills = {
                venue: [run for run, command in runs if command == "kill"]
                for venue, runs in held.items()
            }
            killing = {venue for venue, runs in kills.items() if runs}
            for name in sorted(killing & set(self.running)):
                # Paused past the next look: a kill that lives on keeps it paused.
                self.lanes[name].pacer.pause(KILL_LOOK_EVERY * 2 + 0.5)
                if name not in held_by_kill:
                    held_by_kill.add(name)
                    self._notice(
                        f"{name}: paused while kill {', '.join(kills[name])} is live there"
                    )
            for name in sorted(held_by_kill - killing):
                held_by_kill.discard(name)
                lane = self.lanes.get(name)
                if lane is not None:
                    lane.pacer.paused_until = 0.0
                    lane.queue.wake()
                if name in self.running:
                    self._notice(f"{name}: the kill there has ended; going on")

    def _notice(self, text: str) -> None:
        if self.options.notice is not None:
            self.options.notice(text)

    async def _report(self) -> None:
        assert self.views is not None
        while True:
            self.views(self.result.lanes)
            await self.options.sleep(REPORT_EVERY)


async def _run_lane(
    lane: _Lane,
    core: LaneCore,
    settings: VenueSettings,
    book: BookView | None,
    others_busy: Callable[[], bool],
) -> None:
    """A lane's task: its transport open for as long as it runs."""
    async with core.open_transport(settings.max_in_flight) as transport:
        if isinstance(lane, CancelLane):
            await lane.run(transport, book, others_busy)
        else:
            await lane.run(transport)


def _unusable(name: str, settings: VenueSettings | None) -> str:
    if settings is None:
        return f"unknown venue {name!r}"
    if not settings.base_url:
        return f"no base_url for {name}: set [venues.{name}] base_url in the venues config"
    return ""
