"""sFOX adapter: the exact request, and every answer of VENUES.md's sFOX table."""

from __future__ import annotations

import asyncio
import json

import pytest

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest, OrderRow, Reply, VerdictKind
from batchcancel.venues.sfox import SfoxVenue
from tests.conftest import CREDENTIALS, ServeSimulators

VENUE = SfoxVenue(CREDENTIALS)


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status=status, headers=headers, body=body)


class TestBuild:
    def test_delete_with_bearer_and_no_body(self) -> None:
        """seed 000: DELETE /v1/orders/:order_id with `Authorization: Bearer <key>`."""
        request = VENUE.build_cancel(OrderRow("sfox", "123"), now=0.0)
        assert request.method == "DELETE"
        assert request.path == "/v1/orders/123"
        assert request.headers == (
            ("Authorization", f"Bearer {CREDENTIALS['BATCHCANCEL_SFOX_API_KEY']}"),
        )
        assert request.body is None

    def test_order_id_is_url_encoded(self) -> None:
        """An id with reserved characters cannot escape its path segment."""
        assert VENUE.build_cancel(OrderRow("sfox", "a/b?c"), now=0.0).path == "/v1/orders/a%2Fb%3Fc"

    @pytest.mark.parametrize("order_id", ["", "has space", "x" * 129])
    def test_invalid_ids(self, order_id: str) -> None:
        """Empty, spaced or overlong ids are invalid and never sent."""
        assert VENUE.validate(OrderRow("sfox", order_id)) is not None

    @pytest.mark.parametrize(
        "order_id", [".", "..", "%2e", "%2E", ".%2E", "%2e%2e", "%2E.", "%252e%252E", "%25%32%65"]
    )
    def test_dot_segments_are_invalid(self, order_id: str) -> None:
        """`.` and `..`, as sent or once a gateway percent-decodes them (any number of times),
        would be resolved to another path: invalid, with the reason (VENUES.md, sfox)."""
        reason = VENUE.validate(OrderRow("sfox", order_id))
        assert reason is not None and "dot segment" in reason

    @pytest.mark.parametrize("order_id", ["...", ".a", "a.", "1.5", "%2e%2e%2e"])
    def test_dots_in_an_id_are_fine(self, order_id: str) -> None:
        """Only a whole segment of one or two dots resolves; other dots are plain characters."""
        assert VENUE.validate(OrderRow("sfox", order_id)) is None

    def test_missing_key_is_a_credentials_problem(self) -> None:
        """Without its variable the venue reports which one is missing."""
        assert SfoxVenue({}).credentials_problem() == "BATCHCANCEL_SFOX_API_KEY is not set"


CASES = [
    pytest.param(200, b'{"status": "canceled"}', Outcome.CANCELED, id="200-canceled"),
    pytest.param(200, b'{ "status": "cancel pending" }', Outcome.CANCEL_PENDING, id="200-pending"),
    pytest.param(
        200, b'{"status":"Cancel pending"}', Outcome.CANCEL_PENDING, id="200-pending-case"
    ),
    pytest.param(
        200, b'{"status": "order already finished"}', Outcome.ALREADY_CLOSED, id="200-finished"
    ),
    pytest.param(400, b'{"error": "internal error"}', Outcome.NOT_FOUND, id="400-not-found"),
    pytest.param(
        400,
        b'{"error": "the order is already done/canceled"}',
        Outcome.ALREADY_CLOSED,
        id="400-already",
    ),
    pytest.param(400, b'{"error": "bad things"}', Outcome.REJECTED, id="400-other"),
    pytest.param(422, b'{"error": "Unprocessable Entity"}', Outcome.REJECTED, id="422"),
    pytest.param(200, b'{"status": "weird"}', Outcome.REJECTED, id="200-unknown-status"),
    pytest.param(404, b"<html>nginx</html>", Outcome.REJECTED, id="404-unclassified"),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "body", "outcome"), CASES)
    def test_final_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Each documented or assumed answer lands on its outcome."""
        verdict = VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    @pytest.mark.parametrize("status", [401, 403])
    def test_auth_refused(self, status: int) -> None:
        """401 and 403 stop the venue."""
        verdict = VENUE.classify(reply(status, b'{"error": "Unauthorized"}'))
        assert verdict.kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b"oops"), (503, b""), (200, b"<html>"), (200, b'{"status": "cance'), (400, b"")],
    )
    def test_unknown_outcome_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried, never `rejected` or success."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.TRANSIENT

    def test_429_pauses_the_venue(self) -> None:
        """A 429 is transient and rate-limited; sFOX sends no Retry-After."""
        verdict = VENUE.classify(reply(429, b'{"error": "rate limit exceeded"}'))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.rate_limited and verdict.retry_after is None


class TestAgainstSimulator:
    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.CANCELED),
            (OrderState.OPEN_ASYNC, Outcome.CANCEL_PENDING),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED),
            (OrderState.CANCELED, Outcome.ALREADY_CLOSED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_outcome(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Over real HTTP, the simulator's answer for each book state classifies as expected."""
        simulator = SfoxSimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({"42": state})
        async with (
            serve_simulators({"sfox": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session,
                server.url("sfox"),
                VENUE.build_cancel(OrderRow("sfox", "42"), now=0.0),
                timeout=2.0,
            )
        assert VENUE.classify(answer).outcome is outcome
        assert simulator.requests["42"] == 1

    async def test_wrong_key_is_refused(self, serve_simulators: ServeSimulators) -> None:
        """The simulator checks the Bearer key; the adapter reads its 401 as a refusal."""
        simulator = SfoxSimulator(credentials=CREDENTIALS)
        simulator.seed({"42": OrderState.OPEN})
        wrong = SfoxVenue({"BATCHCANCEL_SFOX_API_KEY": "wrong"})
        async with (
            serve_simulators({"sfox": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session,
                server.url("sfox"),
                wrong.build_cancel(OrderRow("sfox", "42"), now=0.0),
                timeout=2.0,
            )
        assert VENUE.classify(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.book["42"] is OrderState.OPEN

    async def test_rate_limit_answers_429(self, serve_simulators: ServeSimulators) -> None:
        """Past its limit the simulator answers 429 and the adapter pauses the venue."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=2, period=10.0, penalty=10.0)
        simulator.seed({str(i): OrderState.OPEN for i in range(3)})
        async with (
            serve_simulators({"sfox": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            verdicts = [
                VENUE.classify(
                    await send(
                        session,
                        server.url("sfox"),
                        VENUE.build_cancel(OrderRow("sfox", str(i)), now=0.0),
                        timeout=2.0,
                    )
                )
                for i in range(3)
            ]
        assert [v.outcome for v in verdicts[:2]] == [Outcome.CANCELED, Outcome.CANCELED]
        assert verdicts[2].rate_limited
        assert simulator.rate_limited == 1


class TestTransport:
    async def test_dropped_connection_is_not_resent(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """aiohttp's silent re-send of a DELETE is off: a drop reaches the venue exactly once."""
        simulator = SfoxSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("42", Fault.DROP)
        )
        simulator.seed({"42": OrderState.OPEN, "1": OrderState.OPEN})
        from batchcancel.errors import TransientVenueError

        async with (
            serve_simulators({"sfox": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            # A first request makes the connection a kept-alive one, as in a real run.
            await send(
                session,
                server.url("sfox"),
                VENUE.build_cancel(OrderRow("sfox", "1"), now=0.0),
                timeout=2.0,
            )
            with pytest.raises(TransientVenueError):
                await send(
                    session,
                    server.url("sfox"),
                    VENUE.build_cancel(OrderRow("sfox", "42"), now=0.0),
                    timeout=2.0,
                )
        assert simulator.requests["42"] == 1
        assert simulator.book["42"] is OrderState.OPEN

    async def test_slow_answer_times_out(self, serve_simulators: ServeSimulators) -> None:
        """An answer slower than the timeout is a transient error."""
        from batchcancel.errors import TransientVenueError

        simulator = SfoxSimulator(
            credentials=CREDENTIALS, faults=FaultPlan(slow_seconds=1.0).script("42", Fault.SLOW)
        )
        simulator.seed({"42": OrderState.OPEN})
        async with (
            serve_simulators({"sfox": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            with pytest.raises(TransientVenueError, match="no answer within"):
                await send(
                    session,
                    server.url("sfox"),
                    VENUE.build_cancel(OrderRow("sfox", "42"), now=0.0),
                    timeout=0.2,
                )


def status_request(venue: SfoxVenue, order_id: str) -> CancelRequest:
    request = venue.build_status(OrderRow("sfox", order_id), now=0.0)
    assert request is not None
    return request


async def exchange(
    serve_simulators: ServeSimulators, simulator: SfoxSimulator, *steps: CancelRequest | float
) -> list[Reply]:
    """Send each request in turn (a number: sleep that long first); the answers, in order."""
    answers = []
    async with (
        serve_simulators({"sfox": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                answers.append(await send(session, server.url("sfox"), step, timeout=2.0))
    return answers


def order(status: str, code: int | str | None = None, **extra: object) -> bytes:
    """An sFOX Get Single Order answer."""
    body: dict[str, object] = {"id": 42, "status": status, **extra}
    if code is not None:
        body["status_code"] = code
    return json.dumps(body).encode()


STATUS_CASES = [
    pytest.param(200, order("Cancel Pending", 90), Outcome.CANCEL_PENDING, id="cancel-pending"),
    pytest.param(200, order("Canceled", 10), Outcome.CANCELED, id="canceled"),
    pytest.param(200, order("CANCELED"), Outcome.CANCELED, id="canceled-upper"),
    pytest.param(200, order("cancel  pending"), Outcome.CANCEL_PENDING, id="pending-spaced"),
    pytest.param(200, order("Done", 300), Outcome.ALREADY_CLOSED, id="done"),
    pytest.param(200, order("Filled", 210), Outcome.ALREADY_CLOSED, id="filled"),
    pytest.param(200, order("", "10"), Outcome.CANCELED, id="code-only-as-string"),
    pytest.param(200, order("Novel", 90), Outcome.CANCEL_PENDING, id="unknown-name-known-code"),
    pytest.param(200, order("Started", 100), Outcome.REJECTED, id="started-is-still-open"),
    pytest.param(200, order("Weird", 7), Outcome.REJECTED, id="unknown-status"),
    pytest.param(400, b'{"error": "internal error"}', Outcome.NOT_FOUND, id="400-not-found"),
    pytest.param(404, b'{"error": "order not found"}', Outcome.NOT_FOUND, id="404-json"),
    pytest.param(404, b"", Outcome.NOT_FOUND, id="404-empty"),
    pytest.param(400, b'{"error": "bad request"}', Outcome.REJECTED, id="400-other"),
]


class TestConfirm:
    def test_status_request_is_a_get_with_bearer(self) -> None:
        """VENUES.md (Confirm): GET /v1/orders/:id with the Bearer key and no body."""
        request = status_request(VENUE, "123")
        assert request.method == "GET"
        assert request.path == "/v1/orders/123"
        assert request.headers == (
            ("Authorization", f"Bearer {CREDENTIALS['BATCHCANCEL_SFOX_API_KEY']}"),
        )
        assert request.body is None
        assert status_request(VENUE, "a/b?c").path == "/v1/orders/a%2Fb%3Fc"

    @pytest.mark.parametrize(("status", "body", "outcome"), STATUS_CASES)
    def test_status_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Status names case-insensitively, else status codes; Started is an open order."""
        verdict = VENUE.classify_status(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    def test_started_says_why(self) -> None:
        """An order still open after its cancel is rejected with a reason, not as pending."""
        verdict = VENUE.classify_status(reply(200, order("Started", 100)))
        assert "still open" in verdict.reason

    @pytest.mark.parametrize("status", [401, 403])
    def test_auth_refused(self, status: int) -> None:
        """401 and 403 stop the venue, as for cancels."""
        verdict = VENUE.classify_status(reply(status, b'{"error": "Unauthorized"}'))
        assert verdict.kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b"oops"), (503, b""), (200, b"<html>"), (200, b'{"status": "Cance'), (404, b"<h>")],
    )
    def test_unknown_status_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried."""
        assert VENUE.classify_status(reply(status, body)).kind is VerdictKind.TRANSIENT

    def test_429_pauses_the_venue(self) -> None:
        """A 429 on a status read pauses the venue like one on a cancel."""
        verdict = VENUE.classify_status(reply(429, b'{"error": "rate limit exceeded"}'))
        assert verdict.kind is VerdictKind.TRANSIENT and verdict.rate_limited

    async def test_pending_cancel_settles(self, serve_simulators: ServeSimulators) -> None:
        """Over HTTP: cancel pending, status Cancel Pending, then Canceled once it settles; the
        status reads are counted apart from the one cancel."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({"42": OrderState.OPEN_ASYNC})
        cancel = VENUE.build_cancel(OrderRow("sfox", "42"), now=0.0)
        status = status_request(VENUE, "42")
        answers = await exchange(serve_simulators, simulator, cancel, status, 0.6, status)
        assert VENUE.classify(answers[0]).outcome is Outcome.CANCEL_PENDING
        assert json.loads(answers[1].body)["status"] == "Cancel Pending"
        assert VENUE.classify_status(answers[1]).outcome is Outcome.CANCEL_PENDING
        assert VENUE.classify_status(answers[2]).outcome is Outcome.CANCELED
        assert simulator.requests["42"] == 1
        assert simulator.status_requests["42"] == 2
        assert simulator.total_requests == 3

    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.REJECTED),
            (OrderState.OPEN_ASYNC, Outcome.REJECTED),
            (OrderState.CANCELED, Outcome.CANCELED),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_status(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Each book state's status answer; a status read never cancels anything."""
        simulator = SfoxSimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({"42": state})
        [answer] = await exchange(serve_simulators, simulator, status_request(VENUE, "42"))
        assert VENUE.classify_status(answer).outcome is outcome
        assert simulator.book.get("42") is state
        assert simulator.requests["42"] == 0
        assert simulator.status_requests["42"] == 1

    async def test_fill_wins_the_race(self, serve_simulators: ServeSimulators) -> None:
        """A pending cancel that ends filled reads as already_closed."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({"42": OrderState.OPEN_ASYNC})
        simulator.will_fill.add("42")
        cancel = VENUE.build_cancel(OrderRow("sfox", "42"), now=0.0)
        answers = await exchange(
            serve_simulators, simulator, cancel, 0.6, status_request(VENUE, "42")
        )
        assert VENUE.classify_status(answers[1]).outcome is Outcome.ALREADY_CLOSED

    async def test_wrong_key_is_refused(self, serve_simulators: ServeSimulators) -> None:
        """The status route checks the key as the cancel route does."""
        simulator = SfoxSimulator(credentials=CREDENTIALS)
        simulator.seed({"42": OrderState.PENDING})
        wrong = SfoxVenue({"BATCHCANCEL_SFOX_API_KEY": "wrong"})
        [answer] = await exchange(serve_simulators, simulator, status_request(wrong, "42"))
        assert VENUE.classify_status(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.requests["42"] == 0
        assert simulator.status_requests["42"] == 1

    async def test_junk_status_answer_is_transient(self, serve_simulators: ServeSimulators) -> None:
        """A scripted junk answer to a status read is retried, not read as an outcome."""
        simulator = SfoxSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("42", Fault.JUNK)
        )
        simulator.seed({"42": OrderState.CANCELED})
        [answer] = await exchange(serve_simulators, simulator, status_request(VENUE, "42"))
        assert VENUE.classify_status(answer).kind is VerdictKind.TRANSIENT
