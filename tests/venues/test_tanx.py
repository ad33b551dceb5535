"""tanX adapter: the exact request, and every answer of VENUES.md's tanX table."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.tanx import TanxSimulator
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest, OrderRow, Reply, VerdictKind
from batchcancel.venues.tanx import JWT_VAR, TanxVenue
from tests.conftest import CREDENTIALS, ServeSimulators

VENUE = TanxVenue(CREDENTIALS)
JWT = CREDENTIALS[JWT_VAR]
QUEUED = b'"message":"Order is successfully queued for cancellation"'


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status=status, headers=headers, body=body)


def row(order_id: str = "42") -> OrderRow:
    return OrderRow("tanx", order_id)


class TestBuild:
    def test_post_with_jwt_and_integer_body(self) -> None:
        """seed 003: POST /sapi/v1/orders/cancel/ with `Authorization: JWT` and an INTEGER id."""
        request = VENUE.build_cancel(row("3"), now=0.0)
        assert request.method == "POST"
        assert request.path == "/sapi/v1/orders/cancel/"
        assert request.headers == (
            ("Authorization", f"JWT {JWT}"),
            ("Content-Type", "application/json"),
        )
        assert request.body == b'{"order_id":3}'

    def test_leading_zeros_still_give_the_integer(self) -> None:
        """The id is sent as a JSON number, whatever zero-padding the input had."""
        request = VENUE.build_cancel(row("0025768879"), now=0.0)
        assert request.body is not None
        assert json.loads(request.body) == {"order_id": 25768879}

    @pytest.mark.parametrize("order_id", ["", "abc", "12.5", "-1", " 7", "1e3", "1" * 20])
    def test_invalid_ids(self, order_id: str) -> None:
        """Anything but a plain integer is invalid and never sent."""
        assert VENUE.validate(row(order_id)) is not None

    def test_valid_id(self) -> None:
        """A plain integer is valid."""
        assert VENUE.validate(row("25768879")) is None

    @pytest.mark.parametrize(
        "order_id", ["0", "000", str(2**53), "9007199254740993", str(2**63 - 1), "9" * 19]
    )
    def test_ids_a_javascript_number_cannot_hold_are_invalid(self, order_id: str) -> None:
        """VENUES.md (tanx): 1 to 2^53-1, since a larger id cannot travel exactly as a JSON
        number to a JavaScript backend; 0 is no order. Invalid, with the range in the reason."""
        reason = VENUE.validate(row(order_id))
        assert reason is not None and "9007199254740991" in reason

    @pytest.mark.parametrize("order_id", ["1", "0001", str(2**53 - 1)])
    def test_the_ends_of_the_range_are_valid(self, order_id: str) -> None:
        """1 and 2^53-1 (zero-padded or not) are sent."""
        assert VENUE.validate(row(order_id)) is None

    def test_missing_jwt_is_a_credentials_problem(self) -> None:
        """Without its variable the venue reports which one is missing."""
        assert TanxVenue({}).credentials_problem() == "BATCHCANCEL_TANX_JWT is not set"
        assert VENUE.credentials_problem() is None


CASES = [
    pytest.param(
        200,
        b'{"status":"success",' + QUEUED + b',"payload":{"id":25768879,"state":"wait",'
        b'"cancel_reason":null}}',
        Outcome.CANCEL_PENDING,
        id="200-queued-wait",
    ),
    pytest.param(
        200,
        b'{"status":"success",' + QUEUED + b',"payload":{"id":3,"state":"cancel"}}',
        Outcome.CANCELED,
        id="200-state-cancel",
    ),
    pytest.param(
        200,
        b'{"status":"success","message":"Cancelled Order Successfully","payload":{"order_id":3}}',
        Outcome.CANCELED,
        id="200-older-form",
    ),
    pytest.param(
        400,
        b'{"status":"error","message":"Order not found","payload":""}',
        Outcome.NOT_FOUND,
        id="400-not-found",
    ),
    pytest.param(
        404,
        b'{"status":"error","message":"Not found.","payload":""}',
        Outcome.NOT_FOUND,
        id="404-not-found",
    ),
    pytest.param(
        400,
        b'{"status":"error","message":"Order already cancelled or filled","payload":""}',
        Outcome.ALREADY_CLOSED,
        id="400-already",
    ),
    pytest.param(
        400,
        b'{"status":"error","message":"Order is Filled","payload":""}',
        Outcome.ALREADY_CLOSED,
        id="400-filled",
    ),
    pytest.param(
        400,
        b'{"status":"error","message":"Market is suspended","payload":""}',
        Outcome.REJECTED,
        id="400-other",
    ),
    pytest.param(
        422,
        b'{"status":"error","message":"order_id: A valid integer is required.","payload":""}',
        Outcome.REJECTED,
        id="422-other",
    ),
    pytest.param(
        200,
        b'{"status":"success",' + QUEUED + b',"payload":{"state":"done"}}',
        Outcome.REJECTED,
        id="200-unknown-state",
    ),
    # VENUES.md: a 2xx error envelope is read by its message, as a 4xx is.
    pytest.param(
        200,
        b'{"status":"error","message":"Order not found","payload":""}',
        Outcome.NOT_FOUND,
        id="200-error-envelope",
    ),
    pytest.param(
        200,
        b'{"status":"error","message":"Try again later","payload":""}',
        Outcome.REJECTED,
        id="200-error-envelope-other",
    ),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "body", "outcome"), CASES)
    def test_final_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Each documented or assumed answer lands on its outcome."""
        verdict = VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    def test_other_messages_are_recorded(self) -> None:
        """A rejection keeps the venue's message as its reason."""
        body = b'{"status":"error","message":"Market is suspended","payload":""}'
        assert "Market is suspended" in VENUE.classify(reply(400, body)).reason

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (
                401,
                b'{"status":"error","message":"Given token not valid for any token type",'
                b'"payload":{"token_type":"access","code":"token_not_valid"}}',
            ),
            (
                401,
                b'{"status":"error","message":"Authentication credentials were not provided.",'
                b'"payload":""}',
            ),
            (403, b'{"status":"error","message":"Forbidden","payload":""}'),
            (
                400,
                b'{"status":"error","message":"Authentication credentials were not provided.",'
                b'"payload":""}',
            ),
        ],
    )
    def test_auth_refused(self, status: int, body: bytes) -> None:
        """401s, and the SDK's token messages on any 4xx, stop the venue."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b"oops"), (503, b""), (200, b"<html>"), (200, b'{"status":"succ'), (400, b"")],
    )
    def test_unknown_outcome_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried, never `rejected` or success."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.TRANSIENT

    def test_429_pauses_the_venue(self) -> None:
        """A 429 is transient and rate-limited, honouring Retry-After when there is one."""
        body = b'{"status":"error","message":"Request was throttled.","payload":""}'
        verdict = VENUE.classify(reply(429, body, **{"retry-after": "3"}))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.rate_limited and verdict.retry_after == 3.0
        assert VENUE.classify(reply(429, body)).retry_after is None


async def cancel_once(
    serve_simulators: ServeSimulators,
    simulator: TanxSimulator,
    venue: TanxVenue = VENUE,
    order_id: str = "42",
) -> Reply:
    async with (
        serve_simulators({"tanx": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        return await send(
            session, server.url("tanx"), venue.build_cancel(row(order_id), now=0.0), timeout=2.0
        )


class TestAgainstSimulator:
    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.CANCELED),
            (OrderState.OPEN_ASYNC, Outcome.CANCEL_PENDING),
            (OrderState.PENDING, Outcome.CANCEL_PENDING),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED),
            (OrderState.CANCELED, Outcome.ALREADY_CLOSED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_outcome(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Over real HTTP, the simulator's answer for each book state classifies as expected."""
        simulator = TanxSimulator(credentials=CREDENTIALS, settle_after=60.0)
        if state is not None:
            simulator.seed({"42": state})
            simulator.pending_since["42"] = time.monotonic()  # a PENDING cancel is still under way
        answer = await cancel_once(serve_simulators, simulator)
        assert VENUE.classify(answer).outcome is outcome
        assert simulator.requests["42"] == 1

    @pytest.mark.parametrize("jwt", ["wrong", ""])
    async def test_wrong_jwt_is_refused(self, serve_simulators: ServeSimulators, jwt: str) -> None:
        """The simulator checks the JWT; the adapter reads its 401 as a refusal."""
        simulator = TanxSimulator(credentials=CREDENTIALS)
        simulator.seed({"42": OrderState.OPEN})
        answer = await cancel_once(serve_simulators, simulator, TanxVenue({JWT_VAR: jwt}))
        assert answer.status == 401
        assert VENUE.classify(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.book["42"] is OrderState.OPEN

    async def test_rate_limit_answers_429(self, serve_simulators: ServeSimulators) -> None:
        """Past its limit the simulator answers 429 and the adapter pauses the venue."""
        simulator = TanxSimulator(credentials=CREDENTIALS, rate_limit=2, period=10.0, penalty=10.0)
        simulator.seed({str(i): OrderState.OPEN for i in range(3)})
        async with (
            serve_simulators({"tanx": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            verdicts = [
                VENUE.classify(
                    await send(
                        session,
                        server.url("tanx"),
                        VENUE.build_cancel(row(str(i)), now=0.0),
                        timeout=2.0,
                    )
                )
                for i in range(3)
            ]
        assert [v.outcome for v in verdicts[:2]] == [Outcome.CANCELED, Outcome.CANCELED]
        assert verdicts[2].rate_limited
        assert simulator.rate_limited == 1
        assert simulator.book["2"] is OrderState.OPEN

    async def test_429_with_retry_after(self, serve_simulators: ServeSimulators) -> None:
        """A scripted 429 carries Retry-After, which the adapter passes on."""
        faults = FaultPlan(retry_after=2.5).script("42", Fault.RATE_LIMIT)
        simulator = TanxSimulator(credentials=CREDENTIALS, faults=faults)
        simulator.seed({"42": OrderState.OPEN})
        verdict = VENUE.classify(await cancel_once(serve_simulators, simulator))
        assert verdict.rate_limited and verdict.retry_after == 2.5


class TestTransport:
    async def test_dropped_connection_is_not_resent(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """A drop reaches the venue exactly once and surfaces as a transient error."""
        simulator = TanxSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("42", Fault.DROP)
        )
        simulator.seed({"42": OrderState.OPEN, "1": OrderState.OPEN})
        async with (
            serve_simulators({"tanx": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            # A first request makes the connection a kept-alive one, as in a real run.
            await send(
                session, server.url("tanx"), VENUE.build_cancel(row("1"), now=0.0), timeout=2.0
            )
            with pytest.raises(TransientVenueError):
                await send(
                    session, server.url("tanx"), VENUE.build_cancel(row("42"), now=0.0), timeout=2.0
                )
        assert simulator.requests["42"] == 1
        assert simulator.book["42"] is OrderState.OPEN


def status_request(venue: TanxVenue, order_id: str = "42") -> CancelRequest:
    request = venue.build_status(row(order_id), now=0.0)
    assert request is not None
    return request


async def exchange(
    serve_simulators: ServeSimulators, simulator: TanxSimulator, *steps: CancelRequest | float
) -> list[Reply]:
    """Send each request in turn (a number: sleep that long first); the answers, in order."""
    answers = []
    async with (
        serve_simulators({"tanx": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                answers.append(await send(session, server.url("tanx"), step, timeout=2.0))
    return answers


def order(state: object) -> bytes:
    """A tanX get-order answer: the success envelope with the order as payload."""
    payload = {"id": 42, "side": "buy", "ord_type": "limit", "state": state, "market": "btcusdc"}
    return json.dumps({"status": "success", "message": "ok", "payload": payload}).encode()


def error(message: str) -> bytes:
    return json.dumps({"status": "error", "message": message, "payload": ""}).encode()


STATUS_CASES = [
    pytest.param(200, order("cancel"), Outcome.CANCELED, id="cancel"),
    pytest.param(200, order("Cancel"), Outcome.CANCELED, id="cancel-case"),
    pytest.param(200, order("done"), Outcome.ALREADY_CLOSED, id="done"),
    pytest.param(200, order("wait"), Outcome.CANCEL_PENDING, id="wait"),
    pytest.param(200, order("pending"), Outcome.CANCEL_PENDING, id="pending"),
    pytest.param(200, order("reject"), Outcome.REJECTED, id="unknown-state"),
    pytest.param(200, order(None), Outcome.REJECTED, id="no-state"),
    pytest.param(404, error("Order not found"), Outcome.NOT_FOUND, id="404-not-found"),
    pytest.param(400, error("Order does not exist"), Outcome.NOT_FOUND, id="400-not-found"),
    pytest.param(400, error("Market is suspended"), Outcome.REJECTED, id="400-other"),
    # VENUES.md: a 2xx error envelope is read by its message, as a 4xx is.
    pytest.param(200, error("Order not found"), Outcome.NOT_FOUND, id="200-error-envelope"),
    pytest.param(200, error("Try again later"), Outcome.REJECTED, id="200-error-envelope-other"),
]


class TestConfirm:
    def test_status_request_is_a_get_with_jwt(self) -> None:
        """VENUES.md (Confirm): GET /sapi/v1/orders/<order_id>/ with the JWT and no body."""
        request = status_request(VENUE, "3")
        assert request.method == "GET"
        assert request.path == "/sapi/v1/orders/3/"
        assert request.headers == (("Authorization", f"JWT {JWT}"),)
        assert request.body is None
        assert status_request(VENUE, "007").path == "/sapi/v1/orders/7/"

    @pytest.mark.parametrize(("status", "body", "outcome"), STATUS_CASES)
    def test_status_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """payload.state: cancel confirms, done closed, wait (open or queued) still pending."""
        verdict = VENUE.classify_status(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (401, error("Authentication credentials were not provided.")),
            (
                401,
                b'{"status":"error","message":"Given token not valid for any token type",'
                b'"payload":{"token_type":"access","code":"token_not_valid"}}',
            ),
            (403, error("Forbidden")),
        ],
    )
    def test_auth_refused(self, status: int, body: bytes) -> None:
        """401/403 and the SDK's token messages stop the venue, as for cancels."""
        assert VENUE.classify_status(reply(status, body)).kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b"oops"), (503, b""), (429, error("throttled")), (200, b"<html>"), (404, b"")],
    )
    def test_unknown_status_is_transient(self, status: int, body: bytes) -> None:
        """429, 5xx and unparsable bodies are retried."""
        assert VENUE.classify_status(reply(status, body)).kind is VerdictKind.TRANSIENT

    async def test_pending_cancel_settles(self, serve_simulators: ServeSimulators) -> None:
        """Over HTTP: queued (wait), then cancel once it settles; status reads are counted
        apart from the one cancel."""
        simulator = TanxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({"42": OrderState.OPEN_ASYNC})
        status = status_request(VENUE)
        answers = await exchange(
            serve_simulators, simulator, VENUE.build_cancel(row(), now=0.0), status, 0.6, status
        )
        assert VENUE.classify(answers[0]).outcome is Outcome.CANCEL_PENDING
        assert json.loads(answers[1].body)["payload"]["state"] == "wait"
        assert VENUE.classify_status(answers[1]).outcome is Outcome.CANCEL_PENDING
        assert VENUE.classify_status(answers[2]).outcome is Outcome.CANCELED
        assert simulator.requests["42"] == 1
        assert simulator.status_requests["42"] == 2
        assert simulator.total_requests == 3

    async def test_fill_wins_the_race(self, serve_simulators: ServeSimulators) -> None:
        """A queued cancel that loses to a fill reads done: already_closed."""
        simulator = TanxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({"42": OrderState.OPEN_ASYNC})
        simulator.will_fill.add("42")
        answers = await exchange(
            serve_simulators,
            simulator,
            VENUE.build_cancel(row(), now=0.0),
            0.6,
            status_request(VENUE),
        )
        assert VENUE.classify_status(answers[1]).outcome is Outcome.ALREADY_CLOSED

    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.CANCEL_PENDING),
            (OrderState.CANCELED, Outcome.CANCELED),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_status(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Each book state's status answer; a status read never cancels anything."""
        simulator = TanxSimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({"42": state})
        [answer] = await exchange(serve_simulators, simulator, status_request(VENUE))
        assert VENUE.classify_status(answer).outcome is outcome
        assert simulator.book.get("42") is state
        assert simulator.requests["42"] == 0
        assert simulator.status_requests["42"] == 1

    async def test_wrong_jwt_is_refused(self, serve_simulators: ServeSimulators) -> None:
        """The status route checks the JWT as the cancel route does."""
        simulator = TanxSimulator(credentials=CREDENTIALS)
        simulator.seed({"42": OrderState.PENDING})
        [answer] = await exchange(
            serve_simulators, simulator, status_request(TanxVenue({JWT_VAR: "wrong"}))
        )
        assert answer.status == 401
        assert VENUE.classify_status(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.requests["42"] == 0
        assert simulator.status_requests["42"] == 1


def bulk_answer(*items: dict[str, object], status: str = "success") -> bytes:
    """ASSUMED form of a bulk-cancel answer: the envelope listing the cancelled orders."""
    message = "Orders are successfully queued for cancellation"
    return json.dumps({"status": status, "message": message, "payload": list(items)}).encode()


class TestBulkCancel:
    """VENUES.md (tanx, Bulk): POST /sapi/v1/user/bulkcancel/ {"market","side","limit"}."""

    def test_request(self) -> None:
        request = VENUE.build_sweep("btcusdt/sell", now=0.0)
        assert (request.method, request.path) == ("POST", "/sapi/v1/user/bulkcancel/")
        assert request.body == b'{"market":"btcusdt","side":"sell","limit":100}'
        assert dict(request.headers) == {
            "Authorization": f"JWT {JWT}",
            "Content-Type": "application/json",
        }

    def test_targets_are_both_sides_of_each_market_named(self) -> None:
        rows = [
            OrderRow("tanx", "1", symbol="BTCUSDT"),
            OrderRow("tanx", "2", symbol="btc-usdt"),
            OrderRow("tanx", "3", symbol="ETH/USDC"),
            OrderRow("tanx", "4"),
        ]
        assert VENUE.sweep_targets(rows) == [
            "btcusdt/buy",
            "btcusdt/sell",
            "ethusdc/buy",
            "ethusdc/sell",
        ]
        assert VENUE.sweep_targets([OrderRow("tanx", "4")]) == []

    def test_keys_are_integers(self) -> None:
        assert VENUE.sweep_key(row("0042")) == "42"

    def test_states_give_outcomes(self) -> None:
        answer = VENUE.classify_sweep(
            reply(
                200,
                bulk_answer(
                    {"id": 1, "state": "cancel", "market": "btcusdt"},
                    {"id": "2", "state": "wait", "market": "btcusdt"},
                    {"id": 3, "state": "done", "market": "btcusdt"},  # not a cancel: left out
                    {"state": "cancel"},
                ),
            )
        )
        assert answer.whole is None
        assert {k: v.outcome for k, v in answer.per_order.items()} == {
            "1": Outcome.CANCELED,
            "2": Outcome.CANCEL_PENDING,
        }
        assert answer.symbols == {"1": "BTCUSDT", "2": "BTCUSDT"}
        assert not answer.more

    def test_a_full_page_asks_for_more(self) -> None:
        items = [{"id": n, "state": "cancel", "market": "btcusdt"} for n in range(100)]
        assert VENUE.classify_sweep(reply(200, bulk_answer(*items))).more

    def test_refusals_and_retries_apply_to_the_whole_request(self) -> None:
        refused = VENUE.classify_sweep(
            reply(401, b'{"detail":"Authentication credentials were not provided."}')
        )
        assert refused.whole is not None and refused.whole.kind is VerdictKind.AUTH_REFUSED
        limited = VENUE.classify_sweep(reply(429, b"{}", **{"retry-after": "2"}))
        assert limited.whole is not None and limited.whole.rate_limited

    def test_an_unknown_answer_accounts_for_no_order(self) -> None:
        for answer in (
            reply(200, json.dumps({"status": "success", "payload": {"id": 1}}).encode()),
            reply(400, b'{"status":"error","message":"market: This field is required."}'),
        ):
            swept = VENUE.classify_sweep(answer)
            assert (swept.whole, dict(swept.per_order)) == (None, {})

    async def test_against_the_simulator(self, serve_simulators: ServeSimulators) -> None:
        """Only the market and side named, at most `limit` orders, open ones only."""
        simulator = TanxSimulator(credentials=CREDENTIALS)
        simulator.seed({str(n): OrderState.OPEN for n in range(0, 240, 2)})  # 120 buys
        simulator.seed({"1": OrderState.OPEN, "3": OrderState.FILLED})  # sells
        simulator.markets["4"] = ("ethusdt", "buy")
        request = VENUE.build_sweep("btcusdt/buy", now=0.0)
        async with (
            serve_simulators({"tanx": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            first = await send(session, server.url("tanx"), request, timeout=2.0)
            second = await send(session, server.url("tanx"), request, timeout=2.0)
        one, two = VENUE.classify_sweep(first), VENUE.classify_sweep(second)
        assert (len(one.per_order), one.more) == (100, True)
        assert (len(two.per_order), two.more) == (19, False)  # order 4 is in ethusdt
        assert simulator.book["4"] is OrderState.OPEN
        assert simulator.book["1"] is OrderState.OPEN
        assert simulator.bulk_requests == 2
