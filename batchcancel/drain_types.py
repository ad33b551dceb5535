"""What a drain is told (DrainOptions, with its seams for time, randomness, threads and the
network), what it shows (LaneView) and how it ended (DrainResult): plain data.

Kept apart from the engine so the CLI can build options and say what it is about to cancel
before aiohttp is imported (about 0.1 s of a kill's first second).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from batchcancel.venues.base import CancelRequest, Reply

__all__ = [
    "MAX_BODY_BYTES",
    "SYSTEM_CLOCK",
    "BookView",
    "BooksScope",
    "Clock",
    "DrainOptions",
    "DrainResult",
    "LaneView",
    "Offload",
    "OpenTransport",
    "Sleep",
    "SystemClock",
    "Transport",
    "stamp",
]

MAX_BODY_BYTES: Final = 64 * 1024  # enough for any cancel answer; bounds memory on junk

P = ParamSpec("P")
R = TypeVar("R")


class Clock(Protocol):
    """Time as the engine reads it: monotonic seconds for waits, Unix time for stamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wall(self) -> float:
        """Unix time in seconds: request signatures and audit timestamps."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall(self) -> float:
        """time.time()."""
        return time.time()


SYSTEM_CLOCK = SystemClock()

Sleep = Callable[[float], Awaitable[None]]


class Offload(Protocol):
    """How a blocking audit-store call runs without holding up the event loop."""

    def __call__(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[R]: ...


class Transport(Protocol):
    """The one-method network boundary: send a request, get the venue's Reply. Anything on
    the way (timeout, dropped connection, junk) raises TransientVenueError."""

    async def send(
        self, base_url: str, request: CancelRequest, *, timeout: float, max_body: int
    ) -> Reply:
        """Send `request` to `base_url` + its path; at most `max_body` bytes of the answer."""
        ...


# A lane opens its transport with its venue's in-flight bound (the connection pool size).
OpenTransport = Callable[[int], AbstractAsyncContextManager[Transport]]


@dataclass(frozen=True, slots=True)
class BooksScope:
    """`--from-venues`: whose own books to cancel from, narrowed by the scope filters."""

    venues: frozenset[str]
    accounts: tuple[str, ...] = ()  # --account ('' none: every account the venue lists)
    symbols: tuple[str, ...] = ()  # --symbol
    side: str = ""  # --side buy|sell, '' both


@dataclass(frozen=True, slots=True)
class DrainOptions:
    """How one session drains a run."""

    max_attempts: int = 5
    deadline: float | None = None  # seconds from start
    confirm: bool = False  # poll order status of cancel_pending orders instead of cancelling
    bulk: bool = False  # use the venue's bulk-cancel endpoint for fresh orders where it has one
    # --all-open: first cancel every open order of the account with the venue's cancel-all
    # endpoint (ZebPay, tanX), listed in the input or not; the operator must ask for it.
    all_open: bool = False
    poll_every: float = 1.0  # first delay between status polls of one order (doubles, max 5 s)
    handle_signals: bool = True
    lease: float = 30.0  # seconds a worker holds a venue lane without renewing it
    claim_all: bool = False  # take every free lane at once (kill), not one at a time
    books: BooksScope | None = None  # --from-venues: list, cancel, list again until flat
    kill: bool = False  # a kill: other runs' lanes on its venues pause while it is live
    # A line for the operator's stderr (a lane paused for another run's kill, and resumed).
    notice: Callable[[str], None] | None = None
    seed: int | None = None  # for reproducible jitter in tests
    # Seams (tests and the deterministic simulation replace them; the defaults are real).
    clock: Clock = SYSTEM_CLOCK
    sleep: Sleep = asyncio.sleep
    rng: random.Random | None = None  # None: random.Random(seed)
    offload: Offload = asyncio.to_thread
    open_transport: OpenTransport | None = None  # None: aiohttp, imported when a lane opens
    # `clock.monotonic` must agree with the event loop's time: waits for a wake-up with a
    # timeout use the loop's timers (the simulation's loop runs on the same virtual clock).


@dataclass
class LaneView:
    """What the progress display shows of one venue."""

    venue: str
    total: int
    done: int = 0
    sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    paused_until: float = 0.0  # time.monotonic()
    halted: str = ""  # why the lane stopped early, if it did
    started: float = field(default_factory=time.monotonic)


@dataclass
class BookView:
    """Where one venue's own book stands (`--from-venues`), as the summary shows it."""

    verdict: str = "not_flat"  # flat / draining / not_flat
    listed: int = 0  # working orders in scope the lists showed, all rounds
    from_input: int = 0  # of those, orders the input named too
    cancelled: int = 0  # orders of the venue this run cancelled (canceled, cancel_pending)
    working_at_end: int = 0  # working in scope on the last list
    lists: int = 0  # list requests sent
    seconds_to_flat: float | None = None
    detail: str = ""  # why it is not flat

    def summary(self) -> dict[str, object]:
        """The `--json` summary's entry (SPEC: verdict, listed, cancelled, working_at_end,
        seconds_to_flat)."""
        seconds = None if self.seconds_to_flat is None else round(self.seconds_to_flat, 3)
        return {
            "verdict": self.verdict,
            "listed": self.listed,
            "cancelled": self.cancelled,
            "working_at_end": self.working_at_end,
            "seconds_to_flat": seconds,
        }


@dataclass
class DrainResult:
    """How the session ended."""

    stopped: str = ""  # deadline / signal reason, empty if it ran to the end
    lanes: dict[str, LaneView] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)  # lanes another worker took over: theirs now
    books: dict[str, BookView] = field(default_factory=dict)  # --from-venues, by venue


def stamp(clock: Clock) -> datetime:
    """Naive UTC with microseconds, as every audit timestamp is, by `clock`."""
    return datetime.fromtimestamp(clock.wall(), UTC).replace(tzinfo=None)
