"""Every venue against its simulator, over real HTTP on 127.0.0.1, through the same cases.

Each adapter builds the exact request, the simulator answers in the venue's wire format, and
the adapter's reading of the answer is what the simulator's book implies: canceled, pending,
closed, not found; refused credentials; 429 with Retry-After; 5xx; a timeout; a dropped
connection; and the order-status read of the confirm pass. The per-venue files in
tests/venues/ hold the finer tables of each venue's answers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import pytest

from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import Answer, Fault, FaultPlan, OrderState, Simulator
from batchcancel.transport import open_session, send
from batchcancel.venues import VENUES
from batchcancel.venues.base import (
    BulkAnswer,
    CancelRequest,
    OrderRow,
    Reply,
    Venue,
    Verdict,
    VerdictKind,
    supports_bulk,
    supports_status,
    supports_sweep,
)
from tests.conftest import CREDENTIALS, ServeSimulators
from tests.test_five_venues import order_fields

VENUE_PARAMS = [pytest.param(name, id=name) for name in SIMULATORS]
# Etna documents no order-status endpoint: the confirm pass leaves its orders as they are.
WITH_STATUS = [pytest.param(name, id=name) for name in SIMULATORS if VENUES[name].has_status]
TIMEOUT = 0.5  # seconds, for every request here (loopback)


def order_row(venue: str) -> OrderRow:
    fields = order_fields(venue, 1, random.Random(1))
    return OrderRow(
        venue, fields["order_id"], fields.get("account_id", ""), fields.get("symbol", "")
    )


def adapter(venue: str, credentials: Mapping[str, str] = CREDENTIALS) -> Venue:
    return VENUES[venue](
        {k: v for k, v in credentials.items() if k in VENUES[venue].credential_vars}
    )


async def exchange(
    serve_simulators: ServeSimulators, simulator: Simulator, *requests: CancelRequest
) -> list[Reply]:
    """Send each request in turn to the simulator; its answers, in order."""
    answers = []
    async with (
        serve_simulators({simulator.name: simulator}) as server,
        open_session(max_connections=1) as session,
    ):
        for request in requests:
            answers.append(
                await send(session, server.url(simulator.name), request, timeout=TIMEOUT)
            )
    return answers


def simulator_for(
    venue: str, state: OrderState | None, row: OrderRow, **kwargs: object
) -> Simulator:
    simulator = SIMULATORS[venue](credentials=CREDENTIALS, rate_limit=None, **kwargs)  # type: ignore[arg-type]
    if state is not None:
        simulator.seed({row.order_id if venue != "tanx" else str(int(row.order_id)): state})
    return simulator


@pytest.mark.parametrize("venue", VENUE_PARAMS)
@pytest.mark.parametrize(
    "state",
    [
        pytest.param(OrderState.OPEN, id="open"),
        pytest.param(OrderState.OPEN_ASYNC, id="completes-later"),
        pytest.param(OrderState.FILLED, id="filled"),
        pytest.param(None, id="unknown"),
    ],
)
async def test_cancel_reads_as_the_book_implies(
    serve_simulators: ServeSimulators, venue: str, state: OrderState | None
) -> None:
    row = order_row(venue)
    simulator = simulator_for(venue, state, row)
    venue_adapter = adapter(venue)
    (answer,) = await exchange(
        serve_simulators, simulator, venue_adapter.build_cancel(row, now=time.time())
    )
    verdict = venue_adapter.classify(answer)
    assert verdict.kind is VerdictKind.FINAL, verdict
    assert verdict.outcome is simulator.expected_outcomes[state]
    assert simulator.total_requests == 1


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_a_repeat_cancel_reads_as_final(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """What a resumed run meets after a crash: the second cancel of an order is final too."""
    row = order_row(venue)
    simulator = simulator_for(venue, OrderState.OPEN, row)
    venue_adapter = adapter(venue)
    first, second = await exchange(
        serve_simulators,
        simulator,
        venue_adapter.build_cancel(row, now=time.time()),
        venue_adapter.build_cancel(row, now=time.time()),
    )
    assert venue_adapter.classify(first).outcome is simulator.expected_outcomes[OrderState.OPEN]
    assert venue_adapter.classify(second).outcome in (
        Outcome.ALREADY_CLOSED,
        Outcome.CANCEL_PENDING,
    )


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_wrong_credentials_are_refused(serve_simulators: ServeSimulators, venue: str) -> None:
    row = order_row(venue)
    simulator = simulator_for(venue, OrderState.OPEN, row)
    wrong = adapter(venue, {k: f"wrong-{k}" for k in CREDENTIALS})
    (answer,) = await exchange(
        serve_simulators, simulator, wrong.build_cancel(row, now=time.time())
    )
    assert wrong.classify(answer).kind is VerdictKind.AUTH_REFUSED
    assert simulator.book[next(iter(simulator.book))] is OrderState.OPEN  # nothing cancelled


@pytest.mark.parametrize("venue", VENUE_PARAMS)
@pytest.mark.parametrize(
    ("fault", "check"),
    [
        pytest.param(
            Fault.RATE_LIMIT,
            lambda v: v.rate_limited and v.retry_after == 0.25,
            id="429-retry-after",
        ),
        pytest.param(
            Fault.RATE_LIMIT_BARE, lambda v: v.rate_limited and v.retry_after is None, id="429-bare"
        ),
        pytest.param(Fault.SERVER_ERROR, lambda v: not v.rate_limited, id="500"),
        pytest.param(Fault.UNAVAILABLE, lambda v: not v.rate_limited, id="503"),
        pytest.param(Fault.JUNK, lambda v: not v.rate_limited, id="junk-200"),
    ],
)
async def test_faulty_answers_are_transient(
    serve_simulators: ServeSimulators, venue: str, fault: Fault, check: object
) -> None:
    row = order_row(venue)
    simulator = simulator_for(
        venue, OrderState.OPEN, row, faults=FaultPlan(by_request={1: fault}, retry_after=0.25)
    )
    venue_adapter = adapter(venue)
    (answer,) = await exchange(
        serve_simulators, simulator, venue_adapter.build_cancel(row, now=time.time())
    )
    verdict: Verdict = venue_adapter.classify(answer)
    assert verdict.kind is VerdictKind.TRANSIENT, verdict
    assert check(verdict)  # type: ignore[operator]


@pytest.mark.parametrize("venue", VENUE_PARAMS)
@pytest.mark.parametrize(
    "fault", [Fault.DROP, Fault.DROP_AFTER, Fault.SLOW], ids=["drop", "drop-after", "timeout"]
)
async def test_no_answer_is_a_transient_error(
    serve_simulators: ServeSimulators, venue: str, fault: Fault
) -> None:
    """No answer (dropped, or later than the timeout): the outcome is unknown, and exactly one
    request reached the venue (aiohttp's silent re-send is off)."""
    row = order_row(venue)
    simulator = simulator_for(
        venue,
        OrderState.OPEN,
        row,
        faults=FaultPlan(by_request={1: fault}, slow_seconds=2 * TIMEOUT),
    )
    with pytest.raises(TransientVenueError):
        await exchange(
            serve_simulators, simulator, adapter(venue).build_cancel(row, now=time.time())
        )
    assert simulator.total_requests == 1


@pytest.mark.parametrize("venue", WITH_STATUS)
async def test_order_status_confirms_the_cancel(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """The confirm pass's read: after a cancel that completes later, the order reads
    canceled once the venue settled it (ZebPay's cancels are synchronous)."""
    row = order_row(venue)
    simulator = simulator_for(venue, OrderState.OPEN_ASYNC, row, settle_after=0.0)
    venue_adapter = adapter(venue)
    status = venue_adapter.build_status(row, now=time.time())
    assert status is not None
    cancel, read = await exchange(
        serve_simulators, simulator, venue_adapter.build_cancel(row, now=time.time()), status
    )
    assert venue_adapter.classify(cancel).kind is VerdictKind.FINAL
    assert venue_adapter.classify_status(read).outcome is Outcome.CANCELED


REDIRECTS = [301, 302, 303, 307, 308]


@pytest.mark.parametrize("venue", VENUE_PARAMS)
@pytest.mark.parametrize("status", REDIRECTS)
async def test_a_redirect_stops_the_venue(
    serve_simulators: ServeSimulators, venue: str, status: int
) -> None:
    """A 3xx is never followed and says nothing about the order: the venue stops as on
    refused credentials, flagged as a redirect, with the Location in the reason."""
    row = order_row(venue)
    moved = "https://moved.example.invalid/api/v2"
    simulator = simulator_for(
        venue,
        OrderState.OPEN,
        row,
        faults=FaultPlan(by_request={1: Answer.redirect(status, moved)}),
    )
    venue_adapter = adapter(venue)
    (answer,) = await exchange(
        serve_simulators, simulator, venue_adapter.build_cancel(row, now=time.time())
    )
    assert answer.status == status  # not followed
    verdict = venue_adapter.classify(answer)
    assert verdict.kind is VerdictKind.AUTH_REFUSED and verdict.redirect, verdict
    assert f"HTTP {status} redirect to {moved}" in verdict.reason
    assert "base_url" in verdict.reason
    assert set(simulator.book.values()) == {OrderState.OPEN}  # nothing was cancelled


@pytest.mark.parametrize("venue", VENUE_PARAMS)
def test_every_reader_reads_a_redirect_first(venue: str) -> None:
    """Cancel, status, bulk and sweep answers alike: a 3xx is a redirect whatever its body
    says, and a long Location is cut short in the reason."""
    location = "https://moved.example.invalid/" + "x" * 400
    venue_adapter = adapter(venue)
    readers: list[Callable[[Reply], Verdict | None]] = [
        venue_adapter.classify,
        venue_adapter.classify_status,
    ]
    for name in ("classify_bulk", "classify_sweep"):
        if (read := getattr(venue_adapter, name, None)) is not None:
            readers.append(_whole(read))
    for status in REDIRECTS:
        reply = Reply(status, {"location": location}, b'{"status": "canceled"}')
        for read in readers:
            verdict = read(reply)
            assert verdict is not None and verdict.redirect, (status, read, verdict)
            assert verdict.kind is VerdictKind.AUTH_REFUSED
            assert location[:150] in verdict.reason and location not in verdict.reason
            assert len(verdict.reason) < 400
    bare = venue_adapter.classify(Reply(302, {}, b""))
    assert bare.redirect and "no Location" in bare.reason


def _whole(read: Callable[[Reply], BulkAnswer]) -> Callable[[Reply], Verdict | None]:
    """A bulk or sweep reader as a reader of the verdict for all its orders."""
    return lambda reply: read(reply).whole


MALFORMED = [
    pytest.param(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}", id="bad-status-line"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", id="bad-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", id="bad-header"),
    pytest.param(b"not http at all\r\n\r\n", id="garbage"),
]


async def _malformed_answer(serve_simulators: ServeSimulators, data: bytes) -> str:
    """What the transport says of an answer that is not valid HTTP, sent by the sFOX
    simulator; only one request reached it and the book is untouched."""
    row = order_row("sfox")
    plan = FaultPlan(by_request={1: Answer.malformed(data)})
    simulator = simulator_for("sfox", OrderState.OPEN, row, faults=plan)
    with pytest.raises(TransientVenueError) as caught:
        await exchange(serve_simulators, simulator, adapter("sfox").build_cancel(row, now=0.0))
    assert simulator.total_requests == 1
    assert set(simulator.book.values()) == {OrderState.OPEN}
    return str(caught.value)


@pytest.mark.parametrize("data", MALFORMED)
async def test_an_answer_that_is_not_http_is_transient(
    serve_simulators: ServeSimulators, data: bytes
) -> None:
    """Bytes that are not a valid HTTP answer say nothing about the order: transient."""
    assert await _malformed_answer(serve_simulators, data)


@pytest.mark.parametrize("data", MALFORMED)
async def test_a_parse_error_is_not_recorded_as_an_http_status(
    serve_simulators: ServeSimulators, data: bytes
) -> None:
    """Issue 13: the venue sent no HTTP 400; the reason says the answer was not valid HTTP."""
    reason = await _malformed_answer(serve_simulators, data)
    assert "HTTP 400" not in reason, reason


# What each venue declares it can do (VENUES.md): bulk ids per request, a status endpoint, a
# cancel-all endpoint and the most one cancel-all answer cancels (0: one answer covers all).
DECLARED = {
    "sfox": (50, True, False, 0),
    "etna": (0, False, False, 0),
    "crux": (0, True, False, 0),
    "tanx": (0, True, True, 100),
    "zebpay": (0, True, True, 0),
}


@pytest.mark.parametrize("venue", VENUE_PARAMS)
def test_capabilities_are_declared_and_match_the_methods(venue: str) -> None:
    """Each adapter declares its capabilities as class attributes, and they agree with what it
    implements: a bulk size above 1 exactly when it builds bulk cancels, `has_sweep` exactly
    when it has the cancel-all methods, `has_status` exactly when it builds a status request.
    The `supports_*` readers read the declarations, of a class or an adapter alike."""
    cls = VENUES[venue]
    declared = (cls.bulk_size, cls.has_status, cls.has_sweep, cls.sweep_page_limit)
    assert declared == DECLARED[venue]
    made = adapter(venue)
    row = order_row(venue)
    assert (cls.bulk_size > 1) == hasattr(made, "build_bulk_cancel") == supports_bulk(made)
    sweeps = all(hasattr(made, m) for m in ("build_sweep", "classify_sweep", "sweep_targets"))
    assert cls.has_sweep == sweeps == supports_sweep(cls) == supports_sweep(made)
    assert (cls.sweep_page_limit > 0) <= cls.has_sweep
    assert cls.has_status == (made.build_status(row, now=0.0) is not None) == supports_status(cls)
    assert not supports_sweep(None) and not supports_bulk(None) and not supports_status(None)


@pytest.mark.parametrize("venue", VENUE_PARAMS)
def test_json_nested_past_the_recursion_limit_is_unreadable(venue: str) -> None:
    """A body Python's JSON reader cannot parse (RecursionError) reaches no reader as an
    exception: cancel, status, bulk and cancel-all answers read it as unparsable, a retry."""
    venue_adapter = adapter(venue)
    readers: list[Callable[[Reply], Verdict | None]] = [
        venue_adapter.classify,
        venue_adapter.classify_status,
    ]
    for name in ("classify_bulk", "classify_sweep"):
        if (read := getattr(venue_adapter, name, None)) is not None:
            readers.append(_whole_or_note(read))
    for body in (b"[" * 60_000 + b"]" * 60_000, b'{"a":' * 60_000 + b"1" + b"}" * 60_000):
        for status in (200, 400, 404):
            for read in readers:
                verdict = read(Reply(status, {}, body))
                assert verdict is None or verdict.kind is not VerdictKind.AUTH_REFUSED
                assert verdict is None or verdict.outcome is not Outcome.CANCELED


def _whole_or_note(read: Callable[[Reply], BulkAnswer]) -> Callable[[Reply], Verdict | None]:
    """A bulk or sweep reader: its verdict for all the orders, after checking that it accounts
    for none of them one by one (an unreadable answer cancels nothing)."""

    def whole(reply: Reply) -> Verdict | None:
        answer = read(reply)
        assert not answer.per_order
        return answer.whole

    return whole
