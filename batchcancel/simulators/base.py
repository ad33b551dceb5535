"""What every venue simulator shares over HTTP: auth, rate limiting, faults and counters.

A simulator is a real aiohttp application serving an `OrderBook` (book.py). Subclasses add
the venue's routes and speak its exact wire format; this base enforces the rate limit (the
adapter's documented one by default), injects scripted faults (faults.py) and canned
answers (any status, body and headers: a refusal in new words, an error envelope with a 2xx, a
redirect), and counts every request it received, per order (cancels and order-status reads
apart), so that tests can prove what was and was not sent.

Listing (VENUES.md "List open"): `place()` puts a working order in the book with what the
venue's list shows of it (account, symbol, side), orders no input file names included; each
venue's list route reads the same book its cancels change, so a cancelled order stops listing
as working. A `Runaway` keeps placing orders for the first seconds after the first request (or
after the server starts), bounded in count and time. List requests count apart
(`list_requests`), may have a route limit of their own (sFOX), and take their own faults
(`FaultPlan.script_list`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import ClassVar, Final

from aiohttp import web

from batchcancel.outcomes import Outcome
from batchcancel.simulators.book import (
    WORKING,
    Arrival,
    BookOrder,
    OrderBook,
    OrderState,
    Runaway,
)
from batchcancel.simulators.faults import Answer, Fault, FaultPlan
from batchcancel.venues.base import ListVenue

__all__ = [
    "SIMULATOR_KEY",
    "WORKING",
    "Answer",
    "Arrival",
    "BookOrder",
    "Fault",
    "FaultPlan",
    "OrderState",
    "Runaway",
    "Simulator",
]

SIMULATOR_KEY: Final = web.AppKey("simulator", object)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Simulator(OrderBook):
    """Base of every venue simulator. Subclasses set `name` and implement the hooks below."""

    name: ClassVar[str]
    # The adapter of this venue. Its documented limits are the simulator's defaults (tests and
    # the demo pass their own): rate limit, period, the pause after exceeding it (the
    # adapter's cooldown), the list route's own limit (sFOX) and the most rows a list page has.
    venue: ClassVar[type[ListVenue]]
    # The outcome a first cancel of an order seeded in each state ends with (None: unknown id);
    # a venue whose cancels hand over (Crux) or cancel anything open (ZebPay) sets its own.
    expected_outcomes: ClassVar[Mapping[OrderState | None, Outcome]] = {
        OrderState.OPEN: Outcome.CANCELED,
        OrderState.OPEN_ASYNC: Outcome.CANCEL_PENDING,
        OrderState.PENDING: Outcome.CANCEL_PENDING,
        OrderState.CANCELED: Outcome.ALREADY_CLOSED,
        OrderState.FILLED: Outcome.ALREADY_CLOSED,
        None: Outcome.NOT_FOUND,
    }

    def __init__(
        self,
        *,
        credentials: Mapping[str, str],
        rate_limit: int | None = -1,
        period: float | None = None,
        penalty: float | None = None,
        faults: FaultPlan | None = None,
        settle_after: float = 0.5,
        list_rate_limit: int | None = -1,
        runaway: Runaway | None = None,
    ) -> None:
        super().__init__(settle_after=settle_after)
        self.credentials = dict(credentials)
        limits = self.venue.defaults
        self.rate_limit = limits.rate_limit if rate_limit == -1 else rate_limit
        self.period = period if period is not None else limits.period
        self.penalty = penalty if penalty is not None else limits.cooldown
        self.faults = faults or FaultPlan()
        # Counters for assertions.
        self.requests: Counter[str] = Counter()  # cancel requests received per order key
        self.status_requests: Counter[str] = Counter()  # order-status (GET) requests per key
        self.arrivals: list[Arrival] = []
        self.total_requests = 0
        self.rate_limited = 0  # 429s answered because the limit was exceeded
        self.auth_refused = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._window: deque[float] = deque()
        self._locked_until = 0.0
        # Listing.
        route = self.venue.list_limit  # None: the list shares the venue's limit
        default_list_limit = route.rate_limit if route is not None else None
        self.list_rate_limit = default_list_limit if list_rate_limit == -1 else list_rate_limit
        self.list_period = route.period if route is not None else 10.0
        self.list_penalty = route.cooldown if route is not None else 10.0
        self.list_requests = 0  # list requests received (any answer)
        self.list_paths: list[str] = []  # each list request's path and query, as received
        self.list_rate_limited = 0  # 429s answered by the list route's own limit
        self.runaway = runaway
        self.runaway_placed: list[str] = []
        self._runaway_task: asyncio.Task[None] | None = None
        self._list_window: deque[float] = deque()
        self._list_locked_until = 0.0

    @property
    def list_max(self) -> int:
        """The most rows a list page may have: the adapter's page size, the venue's limit."""
        return self.venue.list_page_size

    # -- hooks for subclasses ---------------------------------------------------------------

    def routes(self) -> Iterable[web.RouteDef]:
        """The venue's routes."""
        raise NotImplementedError

    async def order_key(self, request: web.Request) -> str | None:
        """The book key of the order a request is about (None for other requests)."""
        raise NotImplementedError

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """The venue's refusal when the request's credentials are wrong, else None."""
        raise NotImplementedError

    def too_many_requests(self, retry_after: float | None) -> web.Response:
        """The venue's 429 answer."""
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else None
        return web.json_response({"error": "rate limit exceeded"}, status=429, headers=headers)

    def junk_body(self) -> bytes:
        """A 200 body that is not JSON."""
        return b"<html><body>upstream proxy says hello</body></html>"

    def truncated_body(self) -> bytes:
        """A 200 body cut short."""
        return b'{"status": "cance'

    def is_list_request(self, request: web.Request) -> bool:
        """True for a request to the venue's list route."""
        return False

    def is_public(self, request: web.Request) -> bool:
        """True for a route that takes no credentials (public market data)."""
        return False

    def malformed_list_answer(self) -> Answer:
        """A list answer in the venue's envelope whose one entry cannot be read (its id is
        missing), for `FaultPlan.script_list`."""
        raise NotImplementedError

    def start_runaway(self) -> None:
        """Start the runaway now (from the loop that serves), once."""
        if self.runaway is None or self._runaway_task is not None:
            return
        self._runaway_task = asyncio.get_running_loop().create_task(self._run_away(self.runaway))

    @property
    def runaway_running(self) -> bool:
        """True while the runaway is still placing orders."""
        return self._runaway_task is not None and not self._runaway_task.done()

    async def stop_runaway(self) -> None:
        """Stop the runaway if it is still placing orders."""
        task, self._runaway_task = self._runaway_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_away(self, plan: Runaway) -> None:
        count = max(0, min(plan.count, 100_000))
        if count == 0:
            return
        interval = max(plan.seconds, 0.0) / count
        started = time.monotonic()
        for n in range(1, count + 1):
            delay = started + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() - started > plan.seconds + interval + 1.0:
                break  # the loop fell behind: it stops on time rather than on count
            key = self.place(
                state=plan.state, account_id=plan.account_id, symbol=plan.symbol, side=plan.side
            )
            self.runaway_placed.append(key)

    # -- the application --------------------------------------------------------------------

    def app(self) -> web.Application:
        """The venue's aiohttp application, to mount under /<name>."""
        app = web.Application(middlewares=[self._middleware])
        app[SIMULATOR_KEY] = self
        app.add_routes(list(self.routes()))
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        if self.runaway is not None and self.runaway.start == "serve":
            self.start_runaway()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.stop_runaway()

    def _list_over_limit(self, now: float) -> bool:
        if self.list_rate_limit is None:
            return False
        if now < self._list_locked_until:
            return True
        while self._list_window and now - self._list_window[0] >= self.list_period:
            self._list_window.popleft()
        if len(self._list_window) >= self.list_rate_limit:
            self._list_locked_until = now + self.list_penalty
            return True
        self._list_window.append(now)
        return False

    def _over_limit(self, now: float) -> bool:
        if self.rate_limit is None:
            return False
        if now < self._locked_until:
            return True
        while self._window and now - self._window[0] >= self.period:
            self._window.popleft()
        if len(self._window) >= self.rate_limit:
            self._locked_until = now + self.penalty
            return True
        self._window.append(now)
        return False

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        self.total_requests += 1
        number = self.total_requests
        if self.runaway is not None and self.runaway.start == "first_request":
            self.start_runaway()
        listing = self.is_list_request(request)
        if listing:
            self.list_requests += 1
            self.list_paths.append(request.path_qs)
        key = await self.order_key(request)
        self.arrivals.append(Arrival(time.time(), key, request.path))
        if key is not None:
            # Every venue's status request is a GET and every cancel is not: `requests` stays
            # the count of cancels sent, which tests use to prove none was sent twice.
            if request.method == "GET":
                self.status_requests[key] += 1
            else:
                self.requests[key] += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            # Counted before authentication, as ZebPay documents and the others do not deny.
            if self._over_limit(time.monotonic()):
                self.rate_limited += 1
                return self.too_many_requests(self._retry_after_for_limit())
            # The list route's own limit (sFOX); the request counted toward the venue's above.
            if listing and self._list_over_limit(time.monotonic()):
                self.list_rate_limited += 1
                return self.too_many_requests(None)
            if not self.is_public(request):
                refusal = self.auth_problem(request, await request.read())
                if refusal is not None:
                    self.auth_refused += 1
                    return refusal
            fault = self.faults.pick_list(number) if listing else self.faults.pick(key, number)
            return await self._with_fault(request, handler, fault)
        finally:
            self.in_flight -= 1

    def _retry_after_for_limit(self) -> float | None:
        """Retry-After sent with a limit 429; None where the venue documents none."""
        return None

    async def _with_fault(
        self, request: web.Request, handler: _Handler, fault: Fault | Answer | None
    ) -> web.StreamResponse:
        if fault is None:
            return await handler(request)
        if isinstance(fault, Answer) and fault.raw:
            if request.transport is not None:
                request.transport.write(fault.body)
            return _drop(request)
        if isinstance(fault, Answer):
            return web.Response(
                status=fault.status,
                body=fault.body,
                headers=dict(fault.headers),
                content_type=fault.content_type,
            )
        if fault is Fault.SERVER_ERROR:
            return web.json_response({"error": "simulated server error"}, status=500)
        if fault is Fault.UNAVAILABLE:
            return web.Response(status=503, text="Service Unavailable")
        if fault is Fault.RATE_LIMIT:
            return self.too_many_requests(self.faults.retry_after)
        if fault is Fault.RATE_LIMIT_BARE:
            return self.too_many_requests(None)
        if fault is Fault.JUNK:
            return web.Response(status=200, body=self.junk_body(), content_type="text/html")
        if fault is Fault.TRUNCATED:
            return web.Response(
                status=200, body=self.truncated_body(), content_type="application/json"
            )
        if fault is Fault.DROP:
            return _drop(request)
        response = await handler(request)
        if fault is Fault.DROP_AFTER:
            return _drop(request)
        await asyncio.sleep(self.faults.slow_seconds)  # Fault.SLOW
        return response


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)  # never reaches the client: the socket is closed


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
