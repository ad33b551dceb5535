"""Deterministic simulation: the real engine, policy, pacer and SQLite audit store, on virtual time.

A seeded schedule picks venues, orders, options and faults; a fake transport answers in each
venue's wire format (the venue simulators' own handlers, called in-process) and injects the
faults; a crash may cut the session at any step, and a resume then finishes the run. After
every schedule the invariants of the write-ahead audit are checked. A failing seed prints
itself; `replay(seed)` runs it again exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import re
import selectors
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from batchcancel.audit.records import PlannedOrder
from batchcancel.audit.store import AuditStore
from batchcancel.config import Settings, load_settings
from batchcancel.drain_types import DrainOptions
from batchcancel.engine import drain
from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import RESUMABLE, Outcome
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.simulators.zebpay import ZebpaySimulator
from batchcancel.venues import get_venue
from batchcancel.venues.base import CancelRequest, Reply, Verdict
from tests.conftest import CREDENTIALS

T = TypeVar("T")

QUANTUM: Final = 1e-6  # virtual seconds: the smallest step the virtual clock takes


class Stuck(AssertionError):
    """The simulated run never ends."""


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual: when nothing is ready it jumps to the next timer
    instead of waiting, so `asyncio.sleep(60)` takes no real time and every run with the same
    inputs interleaves the same way (nothing here may use threads or sockets)."""

    def __init__(self, start: float = 1000.0, limit: float = 3600.0) -> None:
        self._virtual_now = start
        self.end = start + limit  # a run still going then is stuck: a liveness violation
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def call_at(self, when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]  # typeshed's is generic over the callback's arguments; these are passed through
        # A timer a hair ahead (within the clock's resolution) would fire at once without
        # the clock moving, and a "wait until t" loop would never reach t.
        now = self.time()
        if when > now:
            when = max(when, now + QUANTUM)
        return super().call_at(when, callback, *args, **kwargs)

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (only the selector does, between callbacks)."""
        self._virtual_now += seconds


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise Stuck("stalled: no task can run and no timer is set (a deadlock)")
        self._loop.advance(max(timeout, QUANTUM))
        if self._loop.time() > self._loop.end:
            raise Stuck(f"still running after {self._loop.end:g} virtual seconds")
        return []


def run_virtual(coro: Coroutine[Any, Any, T], start: float = 1000.0) -> tuple[T, float]:
    """Run `coro` on a fresh virtual-time loop; its result and the virtual seconds it took."""
    loop = VirtualTimeLoop(start)
    try:
        result = loop.run_until_complete(coro)
        return result, loop.time() - start
    finally:
        loop.close()


# -- the schedule -----------------------------------------------------------------------------

VENUE_NAMES: Final = ("sfox", "etna", "crux", "tanx", "zebpay")
EPOCH: Final = 1_760_000_000.0  # the virtual wall clock's Unix time at virtual zero
TIMEOUT: Final = 2.0  # the venues' request timeout in every schedule


class FaultKind(StrEnum):
    """What the fake network or venue does to one request."""

    RATE_LIMIT = "429 with Retry-After"
    RATE_LIMIT_BARE = "429 without Retry-After"
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    DROP_BEFORE = "dropped before the venue acted"
    DROP_AFTER = "dropped after the venue acted"
    TIMEOUT = "no answer (the venue acted)"
    JUNK = "junk body"
    AUTH = "auth refusal"
    REDIRECT = "redirect"


# Relative weights: refusals and redirects stop a venue, so they are rarer.
FAULT_WEIGHTS: Final = {
    FaultKind.RATE_LIMIT: 3,
    FaultKind.RATE_LIMIT_BARE: 3,
    FaultKind.SERVER_ERROR: 3,
    FaultKind.UNAVAILABLE: 2,
    FaultKind.DROP_BEFORE: 2,
    FaultKind.DROP_AFTER: 2,
    FaultKind.TIMEOUT: 2,
    FaultKind.JUNK: 2,
    FaultKind.AUTH: 1,
    FaultKind.REDIRECT: 1,
}


@dataclass
class VenuePlan:
    """One venue of a schedule: its book, its limits and its faults."""

    name: str
    orders: list[tuple[str, OrderState | None]]  # input order ids, book state (None: unknown)
    extras: list[str]  # working orders the input does not list (a cancel-all finds them)
    rate_limit: int
    max_in_flight: int
    backoff: float
    cooldown: float
    fault_share: float
    faults: list[FaultKind]
    storm: tuple[float, float, bool] | None  # (from, to, with Retry-After): every answer a 429
    script: dict[str, FaultKind] = field(default_factory=dict)  # order id -> its first answer
    period: float = 1.0  # seconds of the venue's rate window


@dataclass
class Schedule:
    """Everything a seed decides."""

    seed: int
    venues: list[VenuePlan]
    bulk: bool
    all_open: bool
    max_attempts: int
    deadline: float | None
    crash_at: int | None  # the step (a store write or a send) at which the process dies
    takeover: str  # how the resume finds the dead session's lanes: "dead" or "expired"
    restart_gap: float  # virtual seconds between the crash and the resume

    def describe(self) -> str:
        venues = ", ".join(
            f"{v.name}:{len(v.orders)}+{len(v.extras)} lim {v.rate_limit} inflight "
            f"{v.max_in_flight} faults {v.fault_share:.2f} {[f.name for f in v.faults]}"
            f"{' storm' if v.storm else ''}"
            for v in self.venues
        )
        return (
            f"seed {self.seed}: [{venues}] bulk={self.bulk} all_open={self.all_open} "
            f"max_attempts={self.max_attempts} deadline={self.deadline} "
            f"crash_at={self.crash_at} takeover={self.takeover}"
        )


def order_id(venue: str, n: int) -> str:
    if venue == "crux":
        return f"00000000-0000-4000-8000-{n:012d}"
    return str(1000 + n)


def make_schedule(seed: int) -> Schedule:
    """The schedule of `seed`: the same seed, the same schedule, always."""
    rng = random.Random(seed)
    names = rng.sample(VENUE_NAMES, rng.randint(1, 3))
    states = [
        OrderState.OPEN,
        OrderState.OPEN,
        OrderState.OPEN_ASYNC,
        OrderState.CANCELED,
        OrderState.FILLED,
        None,
    ]
    venues = []
    n = 0
    for name in sorted(names):
        orders = []
        for _ in range(rng.randint(1, 8)):
            n += 1
            orders.append((order_id(name, n), rng.choice(states)))
        extras = []
        if name in ("tanx", "zebpay") and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                n += 1
                extras.append(order_id(name, n))
        kinds = list(FAULT_WEIGHTS)
        faults = rng.sample(kinds, rng.randint(0, len(kinds)))
        storm = None
        if rng.random() < 0.2:
            start = rng.uniform(0.0, 3.0)
            storm = (start, start + rng.uniform(0.5, 4.0), rng.random() < 0.5)
        venues.append(
            VenuePlan(
                name=name,
                orders=orders,
                extras=extras,
                rate_limit=rng.randint(1, 4),
                max_in_flight=rng.randint(1, 3),
                backoff=rng.choice([0.05, 0.2, 0.5]),
                cooldown=rng.choice([0.5, 1.0, 3.0]),
                fault_share=rng.choice([0.0, 0.1, 0.25, 0.4]) if faults else 0.0,
                faults=sorted(faults),
                storm=storm,
            )
        )
    return Schedule(
        seed=seed,
        venues=venues,
        bulk=rng.random() < 0.3,
        all_open=rng.random() < 0.3,
        max_attempts=rng.randint(2, 5),
        deadline=rng.choice([None, None, None, rng.uniform(0.5, 6.0)]),
        crash_at=rng.randint(1, 40) if rng.random() < 0.5 else None,
        takeover=rng.choice(["dead", "expired"]),
        restart_gap=rng.uniform(0.0, 5.0),
    )


# -- the fake transport: the simulators' handlers, called in-process, on virtual time --------


class Crash(BaseException):
    """The process dies here: nothing after it is written or sent. A BaseException, so that
    no `except Exception` in the engine can mistake it for an answer."""


class Violation(AssertionError):
    """An invariant does not hold."""


@dataclass
class Delivered:
    """The last answer an order's own request brought back to the engine."""

    verdict: Verdict


class World:
    """The venues, the clock of the network and everything observed, over every session of
    one schedule."""

    def __init__(self, schedule: Schedule, db_path: str, run_id: str) -> None:
        self.schedule = schedule
        self.rng = random.Random(schedule.seed * 7919 + 1)
        self.run_id = run_id
        self.db = sqlite3.connect(db_path)
        self.plans = {v.name: v for v in schedule.venues}
        self.sims: dict[str, Simulator] = {}
        self.requests: dict[str, _Requests] = {}
        self.adapters = {v.name: get_venue(v.name)(CREDENTIALS) for v in schedule.venues}
        for plan in schedule.venues:
            sim = SIMULATORS[plan.name](credentials=CREDENTIALS, rate_limit=None, settle_after=0.0)
            if isinstance(sim, ZebpaySimulator):
                # Its skew check reads the real clock; requests are signed on the virtual one.
                sim.timestamp_window = float("inf")
            sim.seed({oid: state for oid, state in plan.orders if state is not None})
            for extra in plan.extras:
                sim.seed({extra: OrderState.OPEN})
            app = sim.app()
            app.router.freeze()
            self.sims[plan.name] = sim
            self.requests[plan.name] = _Requests(app)
        self.ids = {v.name: {oid for oid, _ in v.orders} for v in schedule.venues}
        self.arrivals: dict[str, list[float]] = {v.name: [] for v in schedule.venues}
        # venue -> [429 delivered at, pause until, requests that left during it]
        self.pauses: dict[str, list[list[Any]]] = {v.name: [] for v in schedule.venues}
        self.delivered: dict[tuple[str, str], Delivered | None] = {}
        self.session = 0
        self.swept_in: dict[str, set[int]] = {}  # venue -> sessions a cancel-all reached it in
        self.final_at_crash: set[tuple[str, str]] = set()
        self.steps = 0
        self.crash_at: int | None = schedule.crash_at
        self.crashed = asyncio.Event()
        self.checks = 0
        self.sent = 0
        self.crashes = 0
        self.late_resumes = 0  # resumes needed after the first one (see run_schedule)
        self.violation: str | None = None

    # -- crashing ------------------------------------------------------------------------------
    def step(self) -> None:
        """One step of the process (a store write, a request leaving, an answer coming)."""
        if self.crashed.is_set():
            raise Crash()
        self.steps += 1
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crash_at = None
            self.final_at_crash = {
                (venue, oid)
                for venue, oid in self.db.execute(
                    "select venue, order_id from orders where run_id = ? and state = 'done'",
                    (self.run_id,),
                )
            }
            self.crashed.set()
            raise Crash()

    # -- the invariants checked as each request reaches its venue -------------------------------
    def check(self, ok: bool, message: str) -> None:
        """Count a check; a failed one ends the schedule at once (the process "dies" so that
        nothing runs on after it) and is raised when the schedule is over."""
        self.checks += 1
        if not ok:
            if self.violation is None:
                self.violation = message
            self.crashed.set()
            raise Crash()

    def verify(self, ok: bool, message: str) -> None:
        """A check after the schedule has ended."""
        self.checks += 1
        if not ok:
            raise Violation(message)

    def arrive(self, venue: str, request: CancelRequest) -> set[str]:
        """The request reaches the venue now: it must have its committed write-ahead record,
        name no order that was final at a crash, and fit the venue's window."""
        named = self.named(venue, request)
        for oid in sorted(named):
            (count,) = self.db.execute(
                "select count(*) from attempts a join orders o on o.pk = a.order_pk "
                "where o.run_id = ? and o.venue = ? and o.order_id = ? and a.verdict is null",
                (self.run_id, venue, oid),
            ).fetchone()
            self.check(count >= 1, f"{venue} {oid}: sent without a committed attempt row")
            self.check(
                (venue, oid) not in self.final_at_crash,
                f"{venue} {oid}: final at the crash, sent again",
            )
        if not named:
            (count,) = self.db.execute(
                "select count(*) from requests where run_id = ? and venue = ? and verdict is null",
                (self.run_id, venue),
            ).fetchone()
            self.check(count >= 1, f"{venue}: a request naming no order without its row")
        arrivals = self.arrivals[venue]
        arrivals.append(asyncio.get_running_loop().time())
        plan = self.plans[venue]
        if plan.rate_limit > 0 and len(arrivals) > plan.rate_limit:
            span = arrivals[-1] - arrivals[-1 - plan.rate_limit]
            self.check(
                span >= plan.period - 1e-9,
                f"{venue}: {plan.rate_limit + 1} requests within {span:.4f} s (limit "
                f"{plan.rate_limit} per {plan.period:g} s)",
            )
        self.sent += 1
        return named

    def named(self, venue: str, request: CancelRequest) -> set[str]:
        """The input orders a request names."""
        tokens = set(re.findall(r"[A-Za-z0-9-]+", f"{request.path} {request.body or b''!r}"))
        return self.ids[venue] & tokens

    def leaving(self, venue: str) -> None:
        """A request leaves now: during a 429 pause only those already granted may (at most
        `max_in_flight` of them); a venue that kept sending through the pause breaks this."""
        now = asyncio.get_running_loop().time()
        plan = self.plans[venue]
        for pause in self.pauses[venue]:
            if pause[0] < now < pause[1]:
                pause[2] += 1
                self.check(
                    pause[2] <= plan.max_in_flight,
                    f"{venue}: {pause[2]} requests left during a 429 pause "
                    f"({pause[1] - pause[0]:.2f} s from {pause[0]:.3f})",
                )

    def answered(self, venue: str, reply: Reply) -> None:
        """An answer reaches the engine now; a 429 pauses the venue from now (Retry-After,
        else its cooldown)."""
        verdict = self.adapters[venue].classify(reply)
        if verdict.rate_limited:
            now = asyncio.get_running_loop().time()
            pause = (
                self.plans[venue].cooldown if verdict.retry_after is None else verdict.retry_after
            )
            if pause > 0:
                self.pauses[venue].append([now, now + pause, 0])

    def fault_for(self, venue: str, named: set[str]) -> FaultKind | None:
        plan = self.plans[venue]
        for oid in sorted(named & set(plan.script)):
            return plan.script.pop(oid)
        now = asyncio.get_running_loop().time() - self.started
        if plan.storm is not None and plan.storm[0] <= now < plan.storm[1]:
            return FaultKind.RATE_LIMIT if plan.storm[2] else FaultKind.RATE_LIMIT_BARE
        if plan.faults and self.rng.random() < plan.fault_share:
            weights = [FAULT_WEIGHTS[f] for f in plan.faults]
            return self.rng.choices(plan.faults, weights)[0]
        return None

    started = 0.0


class FakeTransport:
    """A Transport whose network is the World: each request reaches the venue's simulator
    handler after a seeded latency, maybe with a fault."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def send(
        self, base_url: str, request: CancelRequest, *, timeout: float, max_body: int
    ) -> Reply:
        world = self.world
        venue = base_url.rstrip("/").rsplit("/", 1)[-1]
        world.step()  # the process may die as the request is about to leave
        world.leaving(venue)
        fault = world.fault_for(venue, world.named(venue, request))
        await asyncio.sleep(world.rng.uniform(0.001, 0.05))
        if world.crashed.is_set():
            raise Crash()
        named = world.arrive(venue, request)
        sweep = not named
        if sweep:
            world.swept_in.setdefault(venue, set()).add(world.session)
        if fault is FaultKind.DROP_BEFORE:
            raise TransientVenueError("connection dropped: ServerDisconnectedError")
        reply = await self._answer(venue, request, fault)
        if fault is FaultKind.TIMEOUT:
            await asyncio.sleep(timeout)
            raise TransientVenueError(f"no answer within {timeout:g} s")
        await asyncio.sleep(world.rng.uniform(0.001, 0.05))
        world.step()  # the process may die after the venue acted, before the answer is read
        if fault is FaultKind.DROP_AFTER:
            raise TransientVenueError("connection dropped: ServerDisconnectedError")
        body = reply.body[:max_body]
        world.answered(venue, Reply(reply.status, reply.headers, body))
        for oid in named:
            adapter = world.adapters[venue]
            if len(named) == 1 and request.method != "GET":
                world.delivered[venue, oid] = Delivered(
                    adapter.classify(Reply(reply.status, reply.headers, body))
                )
            else:
                world.delivered[venue, oid] = None  # a bulk answer: judged against the book
        return Reply(reply.status, reply.headers, body)

    async def _answer(self, venue: str, request: CancelRequest, fault: FaultKind | None) -> Reply:
        """What the venue answers (its own handler, or the fault in its own words)."""
        sim = self.world.sims[venue]
        if fault in (FaultKind.RATE_LIMIT, FaultKind.RATE_LIMIT_BARE):
            retry_after = (
                self.world.rng.choice([0.0, 0.5, 2.0]) if fault is FaultKind.RATE_LIMIT else None
            )
            return _reply(sim.too_many_requests(retry_after))
        if fault is FaultKind.SERVER_ERROR:
            return Reply(
                500, {"content-type": "application/json"}, b'{"error": "simulated server error"}'
            )
        if fault is FaultKind.UNAVAILABLE:
            return Reply(503, {"content-type": "text/plain"}, b"Service Unavailable")
        if fault is FaultKind.JUNK:
            return Reply(200, {"content-type": "text/html"}, sim.junk_body())
        if fault is FaultKind.REDIRECT:
            return Reply(301, {"location": "https://elsewhere.example/"}, b"")
        headers = {} if fault is FaultKind.AUTH else dict(request.headers)
        real, handler = await self.world.requests[venue].build(request, headers)
        refusal = sim.auth_problem(real, request.body or b"")
        if refusal is not None:
            return _reply(refusal)
        assert fault is not FaultKind.AUTH, f"{venue} accepted a request without credentials"
        return _reply(await handler(real))


class _Requests:
    """aiohttp Requests for a simulator's handlers, built the way aiohttp's own test helper
    builds them; its connection stand-ins and each path's route are made once (that helper
    costs more than the rest of a schedule when it builds them anew for every request)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}
        first = make_mocked_request("GET", "/", app=app)
        self.connection: dict[str, Any] = {
            "protocol": first.protocol,
            "writer": first.writer,
            "transport": first.transport,
        }

    async def build(
        self, request: CancelRequest, headers: dict[str, str]
    ) -> tuple[web.Request, Any]:
        """The Request and the handler its route leads to."""
        loop = asyncio.get_running_loop()
        key = (request.method, request.path.split("?", 1)[0])
        if key not in self.routes:
            probe = make_mocked_request(
                request.method, request.path, app=self.app, **self.connection
            )
            match = await self.app.router.resolve(probe)
            self.routes[key] = (dict(match), match.handler)
        match_info, handler = self.routes[key]
        payload = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
        if request.body:
            payload.feed_data(request.body)
        payload.feed_eof()
        real = make_mocked_request(
            request.method,
            request.path,
            headers=headers,
            app=self.app,
            match_info=match_info,
            payload=payload,
            **self.connection,
        )
        return real, handler


def _reply(response: web.StreamResponse) -> Reply:
    assert isinstance(response, web.Response)
    body = response.body if isinstance(response.body, bytes) else b""
    return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)


class CrashingStore:
    """The real AuditStore, except that the process may die at any write (the World's steps),
    after which nothing reaches the database."""

    WRITES: Final = frozenset(
        {
            "write_batch",
            "claim_lanes",
            "renew_lanes",
            "release_lanes",
            "recover_in_flight",
            "reset_resumable",
            "release_in_flight",
            "settle_unsent",
            "begin_request",
            "answer_request",
            "add_swept",
            "heartbeat",
        }
    )

    def __init__(self, store: AuditStore, world: World) -> None:
        self._store = store
        self._world = world

    @property
    def dialect(self) -> str:
        return self._store.dialect

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        world = self._world

        def call(*args: Any, **kwargs: Any) -> Any:
            if world.crashed.is_set():
                raise Crash()
            if name in self.WRITES:
                world.step()
            return target(*args, **kwargs)

        return call


async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a store call on the loop itself: no threads, so every run interleaves the same."""
    return func(*args, **kwargs)


class SimClock:
    """The virtual clock: the loop's time, and a wall clock that moves with it."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return EPOCH + asyncio.get_running_loop().time()


# -- running schedules ------------------------------------------------------------------------

DEAD_PID: Final = 2**22 + 1  # above Linux's largest pid: no process ever has it


@dataclass
class Tally:
    """What a batch of schedules did."""

    schedules: int = 0
    checks: int = 0
    requests: int = 0
    crashes: int = 0
    late_resumes: int = 0
    failures: list[str] = field(default_factory=list)


class Databases:
    """One migrated SQLite file for a batch of schedules (a run each), and two stores on it:
    the session that may crash, and the process that resumes after it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        url = f"sqlite:///{path}"
        self.first = AuditStore(url)
        self.second = AuditStore(url)

    def close(self) -> None:
        self.first.close()
        self.second.close()


def settings_for(schedule: Schedule) -> Settings:
    overrides = {
        v.name: {
            "base_url": f"http://127.0.0.1/{v.name}",
            "rate_limit": v.rate_limit,
            "period": v.period,
            "max_in_flight": v.max_in_flight,
            "timeout": TIMEOUT,
            "backoff": v.backoff,
            "cooldown": v.cooldown,
        }
        for v in schedule.venues
    }
    return load_settings(CREDENTIALS, db_url="sqlite://", overrides=overrides)


def new_run(store: AuditStore, schedule: Schedule) -> str:
    run_id = store.create_run(
        command="run",
        run_key=None,
        source="dst",
        options={},
        reason=f"seed {schedule.seed}",
        command_line="dst",
        dry_run=False,
    )
    planned: list[PlannedOrder] = []
    for plan in schedule.venues:
        for oid, _ in plan.orders:
            planned.append(PlannedOrder(len(planned) + 1, plan.name, oid, "77", "BTCUSDT"))
    store.add_orders(run_id, planned)
    store.set_totals(run_id, orders_total=len(planned), duplicates=0)  # loading is over
    return run_id


def run_schedule(seed: int, dbs: Databases) -> tuple[World, list[tuple[str, str, str | None]]]:
    """Run one schedule to its end (a crash, then a resume); the World and the outcomes."""
    schedule = make_schedule(seed)
    settings = settings_for(schedule)
    run_id = new_run(dbs.first, schedule)
    world = World(schedule, dbs.path, run_id)

    @contextlib.asynccontextmanager
    async def open_transport(max_connections: int) -> AsyncIterator[FakeTransport]:
        yield FakeTransport(world)

    options = DrainOptions(
        max_attempts=schedule.max_attempts,
        deadline=schedule.deadline,
        bulk=schedule.bulk,
        all_open=schedule.all_open,
        handle_signals=False,
        seed=seed,
        clock=SimClock(),
        offload=inline,
        open_transport=open_transport,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_crashes)
        world.started = loop.time()
        world.session = 1
        crashed = await one_session(
            CrashingStore(dbs.first, world), run_id, settings, options, world
        )
        if crashed and world.violation is None:
            world.crashes = 1
            bury(world, schedule.takeover)
            await asyncio.sleep(1.02 + schedule.restart_gap)  # a restart takes its time
            world.session = 2
            resumed = dataclasses.replace(options, deadline=None)
            await one_session(CrashingStore(dbs.second, world), run_id, settings, resumed, world)
            # A lane taken over from a stalled holder waits out its request timeout before
            # closing what it left in flight; if the venue halts first, those orders stay
            # `sending` (the fencing's rule: they are not ours to settle) until a later resume.
            while unfinished(world) and world.session < 4 and world.violation is None:
                world.session += 1
                world.late_resumes += 1
                await asyncio.sleep(1.02)  # as a restart would: see the first resume
                await one_session(
                    CrashingStore(dbs.second, world), run_id, settings, resumed, world
                )

    run_virtual(main())
    if world.violation is not None:
        raise Violation(world.violation)
    outcomes = [
        (venue, oid, outcome)
        for venue, oid, outcome in world.db.execute(
            "select venue, order_id, outcome from orders where run_id = ? order by pk", (run_id,)
        )
    ]
    check_outcomes(world, outcomes)
    world.db.close()
    return world, outcomes


def _quiet_crashes(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A request task the crash ended is not an error of the run; anything else is."""
    if not isinstance(context.get("exception"), Crash):
        loop.default_exception_handler(context)


async def one_session(
    store: Any, run_id: str, settings: Settings, options: DrainOptions, world: World
) -> bool:
    """One drain; True if the process died in it (every task of it is then gone)."""
    for pauses in world.pauses.values():
        pauses.clear()  # a 429 pauses the session that heard it (a new process cannot know)
    drained = asyncio.create_task(drain(store, run_id, settings, options))
    crashed = asyncio.create_task(world.crashed.wait())
    await asyncio.wait({drained, crashed}, return_when=asyncio.FIRST_COMPLETED)
    if not world.crashed.is_set():
        crashed.cancel()
        drained.result()
        return False
    # The process is gone: every task of it ends. Cancelled again while any is left, since
    # Python 3.11's wait_for can lose a cancellation that meets a wake-up.
    current = asyncio.current_task()
    for _ in range(100):
        others = [task for task in asyncio.all_tasks() if task is not current]
        if not others:
            break
        for task in others:
            task.cancel()
        await asyncio.wait(others, timeout=1.0)
    else:
        raise Stuck("tasks of the crashed session would not end")
    world.crashed.clear()
    return True


def unfinished(world: World) -> int:
    (count,) = world.db.execute(
        "select count(*) from orders where run_id = ? and outcome is null", (world.run_id,)
    ).fetchone()
    return int(count)


def bury(world: World, takeover: str) -> None:
    """After the crash: the dead session's lanes look as a dead process's do to the next one
    (its pid gone), or as a stalled one's (its leases run out, its requests maybe in flight)."""
    db = world.db
    if takeover == "dead":
        for venue, owner in db.execute(
            "select venue, owner from lanes where run_id = ? and owner is not null", (world.run_id,)
        ).fetchall():
            host, _, rest = owner.split(":", 2)
            db.execute(
                "update lanes set owner = ? where run_id = ? and venue = ?",
                (f"{host}:{DEAD_PID}:{rest}", world.run_id, venue),
            )
    else:
        db.execute(
            "update lanes set lease_until = '2000-01-01 00:00:00.000000' "
            "where run_id = ? and owner is not null",
            (world.run_id,),
        )
    db.commit()


def check_outcomes(world: World, outcomes: list[tuple[str, str, str | None]]) -> None:
    """At the end: every input order has exactly one outcome, the one its venue's last
    delivered answer gave (or, for bulk and cancel-all answers, what its book shows); no
    cancel-all reached a venue in two sessions."""
    seen = Counter((venue, oid) for venue, oid, _ in outcomes)
    for plan in world.schedule.venues:
        sim = world.sims[plan.name]
        for oid, _ in plan.orders:
            key = (plan.name, oid)
            world.verify(seen[key] == 1, f"{plan.name} {oid}: {seen[key]} order rows")
        for venue, oid, outcome in outcomes:
            if venue != plan.name or oid not in world.ids[venue]:
                continue
            world.verify(outcome is not None, f"{venue} {oid}: no outcome")
            last = world.delivered.get((venue, oid))
            if last is not None:
                verdict = last.verdict
                if verdict.outcome is not None:
                    world.verify(
                        outcome == verdict.outcome,
                        f"{venue} {oid}: outcome {outcome}, its last answer said {verdict.outcome}",
                    )
                else:
                    world.verify(
                        outcome in RESUMABLE,
                        f"{venue} {oid}: outcome {outcome} after a {verdict.kind} last answer",
                    )
            state = sim.state_of(oid)
            if outcome in (Outcome.CANCELED, Outcome.CANCEL_PENDING):
                world.verify(
                    state in (OrderState.CANCELED, OrderState.PENDING),
                    f"{venue} {oid}: {outcome} but the book says {state}",
                )
            if outcome == Outcome.NOT_FOUND:
                world.verify(state is None, f"{venue} {oid}: not_found but the book has it {state}")
    for venue, sessions in world.swept_in.items():
        world.verify(len(sessions) <= 1, f"{venue}: a cancel-all in sessions {sorted(sessions)}")


def run_many(seeds: range, path: Path) -> Tally:
    """Run every seed; a failing one is reported with its schedule and how to replay it.
    The database lives in memory-backed /dev/shm where there is one (commits cost no fsync)."""
    tally = Tally()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else path.parent) as work:
        return _run_many(seeds, Path(work) / path.name, tally)


def _run_many(seeds: range, path: Path, tally: Tally) -> Tally:
    dbs = Databases(path)
    try:
        for seed in seeds:
            tally.schedules += 1
            try:
                world, _ = run_schedule(seed, dbs)
            except (Violation, Stuck) as exc:
                tally.failures.append(
                    f"{make_schedule(seed).describe()}\n  violation: {exc}\n"
                    f"  replay: python -m tests.test_engine_sim {seed}"
                )
                continue
            tally.checks += world.checks
            tally.requests += world.sent
            tally.crashes += world.crashes
            tally.late_resumes += world.late_resumes
    finally:
        dbs.close()
    return tally


def summary(tally: Tally, seeds: range) -> str:
    return (
        f"dst: {tally.schedules} schedules, {tally.checks} invariant checks, "
        f"{len(tally.failures)} violations (seeds {seeds.start}..{seeds.stop - 1})"
    )


# -- the tests --------------------------------------------------------------------------------

SLICE: Final = range(1, 101)
FULL: Final = range(1, 2001)


def test_a_slice_of_schedules_holds_every_invariant(tmp_path: Path) -> None:
    """100 seeded schedules (faults, crashes, resumes): no invariant is ever broken."""
    tally = run_many(SLICE, tmp_path / "dst.db")
    print(summary(tally, SLICE))
    assert not tally.failures, "\n".join(tally.failures)
    assert tally.crashes > 0 and tally.requests > 0  # the slice does exercise the engine


@pytest.mark.dst
def test_dst(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """pytest -m dst: 2,000 schedules (skipped unless asked for: the default suite runs the
    slice above; addopts' `-m 'not slow'` would otherwise select it)."""
    if "dst" not in str(request.config.getoption("markexpr")):
        pytest.skip("the full simulation runs with -m dst")
    tally = run_many(FULL, tmp_path / "dst.db")
    print(summary(tally, FULL))
    assert not tally.failures, "\n".join(tally.failures[:5])


def test_a_seed_replays_exactly(tmp_path: Path) -> None:
    """The same seed gives the same requests at the same virtual times and the same outcomes."""
    runs = []
    for n in range(2):
        dbs = Databases(tmp_path / f"replay{n}.db")
        try:
            world, outcomes = run_schedule(17, dbs)
        finally:
            dbs.close()
        runs.append((world.arrivals, world.steps, outcomes))
    assert runs[0] == runs[1]


# -- timing behaviour on virtual time (these were wall-clock subprocess tests) -----------------


def one_venue(name: str, count: int, **plan: Any) -> Schedule:
    """A hand-written schedule: one venue, `count` open orders, no random faults, no crash."""
    orders: list[tuple[str, OrderState | None]] = [
        (order_id(name, n), OrderState.OPEN) for n in range(1, count + 1)
    ]
    defaults: dict[str, Any] = {
        "extras": [],
        "rate_limit": 0,
        "max_in_flight": 6,
        "backoff": 0.05,
        "cooldown": 10.0,
        "fault_share": 0.0,
        "faults": [],
        "storm": None,
    }
    venue = VenuePlan(name=name, orders=orders, **{**defaults, **plan})
    return Schedule(
        seed=0,
        venues=[venue],
        bulk=False,
        all_open=False,
        max_attempts=5,
        deadline=None,
        crash_at=None,
        takeover="dead",
        restart_gap=0.0,
    )


def drain_on_virtual_time(
    schedule: Schedule, dbs: Databases, *, deadline: float | None
) -> tuple[World, str, float, dict[str, str | None]]:
    """One session of `schedule`; the World, why it stopped, its virtual seconds, outcomes."""
    run_id = new_run(dbs.first, schedule)
    world = World(schedule, dbs.path, run_id)

    @contextlib.asynccontextmanager
    async def open_transport(max_connections: int) -> AsyncIterator[FakeTransport]:
        yield FakeTransport(world)

    options = DrainOptions(
        deadline=deadline,
        handle_signals=False,
        seed=0,
        clock=SimClock(),
        offload=inline,
        open_transport=open_transport,
    )
    settings = settings_for(schedule)

    async def main() -> str:
        world.started = asyncio.get_running_loop().time()
        result = await drain(CrashingStore(dbs.first, world), run_id, settings, options)
        return result.stopped

    stopped, took = run_virtual(main())
    assert world.violation is None, world.violation
    outcomes = dict(
        world.db.execute("select order_id, outcome from orders where run_id = ?", (run_id,))
    )
    return world, stopped, took, outcomes


class TestTimingOnVirtualTime:
    """Deadline and pause behaviour of the real engine, on virtual time: no wall clock."""

    def test_deadline_during_a_long_429_pause_stops_at_the_deadline(self, tmp_path: Path) -> None:
        """A bare 429 pauses sFOX for its 60 s cooldown; the 1 s deadline still ends the run
        at 1 s: the rate-limited order and every unsent one `skipped`, nothing more sent."""
        schedule = one_venue("sfox", 40, max_in_flight=1, cooldown=60.0)
        victim = order_id("sfox", 6)
        schedule.venues[0].script[victim] = FaultKind.RATE_LIMIT_BARE
        dbs = Databases(tmp_path / "pause.db")
        try:
            world, stopped, took, outcomes = drain_on_virtual_time(schedule, dbs, deadline=1.0)
        finally:
            dbs.close()
        assert stopped == "deadline of 1 s passed"
        assert 1.0 <= took < 1.5  # not the 60 s the pause would take
        assert world.sent == 6  # five canceled, then the 429
        assert Counter(outcomes.values()) == {"canceled": 5, "skipped": 35}
        assert outcomes[victim] == "skipped"

    def test_deadline_while_the_rate_window_is_full_stops_at_the_deadline(
        self, tmp_path: Path
    ) -> None:
        """ZebPay at 5 per 60 s: after 5 cancels the lane waits for a slot; the 1 s deadline
        ends the run at 1 s, not a minute later."""
        schedule = one_venue("zebpay", 20, rate_limit=5, period=60.0)
        dbs = Databases(tmp_path / "window.db")
        try:
            world, stopped, took, outcomes = drain_on_virtual_time(schedule, dbs, deadline=1.0)
        finally:
            dbs.close()
        assert stopped == "deadline of 1 s passed"
        assert 1.0 <= took < 1.5
        assert world.sent == 5
        assert Counter(outcomes.values()) == {"canceled": 5, "skipped": 15}

    def test_a_429_pause_holds_the_venue_for_its_cooldown(self, tmp_path: Path) -> None:
        """A bare 429 pauses the venue for the cooldown (4 s): nothing leaves before it ends,
        and the run finishes just after it."""
        schedule = one_venue("sfox", 3, max_in_flight=1, cooldown=4.0)
        schedule.venues[0].script[order_id("sfox", 1)] = FaultKind.RATE_LIMIT_BARE
        dbs = Databases(tmp_path / "cooldown.db")
        try:
            world, stopped, took, outcomes = drain_on_virtual_time(schedule, dbs, deadline=None)
        finally:
            dbs.close()
        arrivals = world.arrivals["sfox"]
        assert stopped == ""
        assert arrivals[1] - arrivals[0] >= 4.0
        assert 4.0 <= took < 5.0
        assert set(outcomes.values()) == {"canceled"}


def replay(seed: int) -> None:
    """Run one seed in a fresh database and print what it did."""
    with tempfile.TemporaryDirectory() as work:
        dbs = Databases(Path(work) / "replay.db")
        try:
            print(make_schedule(seed).describe())
            world, outcomes = run_schedule(seed, dbs)
            print(f"{world.sent} requests, {world.checks} checks, crashes {world.crashes}")
            for row in outcomes:
                print(*row)
        finally:
            dbs.close()


if __name__ == "__main__":
    replay(int(sys.argv[1]))
