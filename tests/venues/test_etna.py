"""ETNA adapter: the exact request, and every answer of VENUES.md's ETNA table."""

from __future__ import annotations

import pytest

from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest, OrderRow, Reply, VerdictKind
from batchcancel.venues.etna import EtnaVenue
from tests.conftest import CREDENTIALS, ServeSimulators

VENUE = EtnaVenue(CREDENTIALS)
APP_KEY = CREDENTIALS["BATCHCANCEL_ETNA_APP_KEY"]
TOKEN = CREDENTIALS["BATCHCANCEL_ETNA_TOKEN"]


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status=status, headers=headers, body=body)


def row(order_id: str = "73552", account_id: str = "6303") -> OrderRow:
    return OrderRow("etna", order_id, account_id=account_id)


class TestBuild:
    def test_delete_with_app_key_bearer_and_no_body(self) -> None:
        """seed 001: DELETE /v1.0/accounts/6303/orders/73552 with Et-App-Key and a Bearer token."""
        request = VENUE.build_cancel(row(), now=0.0)
        assert request.method == "DELETE"
        assert request.path == "/v1.0/accounts/6303/orders/73552"
        assert request.headers == (("Et-App-Key", APP_KEY), ("Authorization", f"Bearer {TOKEN}"))
        assert request.body is None

    def test_no_public_host(self) -> None:
        """ETNA has no production host: the base URL must come from config."""
        assert EtnaVenue.defaults.base_url == ""
        assert EtnaVenue.required_columns == {"account_id", "order_id"}

    def test_valid_row(self) -> None:
        """Two integer ids make a valid row."""
        assert VENUE.validate(row()) is None

    @pytest.mark.parametrize(
        ("order_id", "account_id"),
        [
            ("", "6303"),
            ("73552", ""),
            ("abc", "6303"),
            ("73552", "x1"),
            ("-1", "6303"),
            ("1.5", "6303"),
            (" 73552", "6303"),
            ("73552", "6303/orders/1"),
            ("1" * 20, "6303"),
        ],
    )
    def test_invalid_ids(self, order_id: str, account_id: str) -> None:
        """A missing or non-integer id is invalid and never sent."""
        assert VENUE.validate(row(order_id, account_id)) is not None

    @pytest.mark.parametrize(
        ("credentials", "problem"),
        [
            ({}, "BATCHCANCEL_ETNA_APP_KEY and BATCHCANCEL_ETNA_TOKEN are not set"),
            ({"BATCHCANCEL_ETNA_TOKEN": "t"}, "BATCHCANCEL_ETNA_APP_KEY is not set"),
            ({"BATCHCANCEL_ETNA_APP_KEY": "k"}, "BATCHCANCEL_ETNA_TOKEN is not set"),
        ],
    )
    def test_missing_credentials(self, credentials: dict[str, str], problem: str) -> None:
        """Both variables are needed; the problem names the missing ones."""
        assert EtnaVenue(credentials).credentials_problem() == problem

    def test_full_credentials(self) -> None:
        """With both variables there is no problem."""
        assert VENUE.credentials_problem() is None


CASES = [
    pytest.param(204, b"", Outcome.CANCELED, id="204-empty"),
    pytest.param(200, b'{"Id": 73552, "Status": "Canceled"}', Outcome.CANCELED, id="200-canceled"),
    pytest.param(200, b'{"Id": "73552", "Status": "Cancelled"}', Outcome.CANCELED, id="200-uk"),
    pytest.param(
        200, b'{"Id": 73552, "Status": "PendingCancel"}', Outcome.CANCEL_PENDING, id="200-pending"
    ),
    pytest.param(
        200, b'{"Status": "pending_cancel"}', Outcome.CANCEL_PENDING, id="200-pending-spelling"
    ),
    pytest.param(
        409,
        b'{"Message": "Only outstanding orders can be cancelled."}',
        Outcome.ALREADY_CLOSED,
        id="409",
    ),
    pytest.param(409, b"", Outcome.ALREADY_CLOSED, id="409-no-body"),
    pytest.param(404, b'{"Message": "Order not found."}', Outcome.NOT_FOUND, id="404"),
    pytest.param(404, b"", Outcome.NOT_FOUND, id="404-no-body"),
    pytest.param(
        422,
        b'{"Message": "Validation error occurred while processing entity"}',
        Outcome.REJECTED,
        id="422",
    ),
    pytest.param(200, b'{"Id": 73552, "Status": "Filled"}', Outcome.REJECTED, id="200-other"),
    pytest.param(418, b"teapot", Outcome.REJECTED, id="418-unclassified"),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "body", "outcome"), CASES)
    def test_final_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Each documented or assumed answer lands on its outcome."""
        verdict = VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    def test_rejection_records_the_message(self) -> None:
        """A 422 keeps the venue's words for a human."""
        verdict = VENUE.classify(reply(422, b'{"Message": "Quantity is invalid"}'))
        assert "Quantity is invalid" in verdict.reason

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (401, b'{"Message": "Authorization has been denied for this request."}'),
            (403, b'{"error": "Application key is not defined or does not exist"}'),
            (403, b""),
        ],
    )
    def test_auth_refused(self, status: int, body: bytes) -> None:
        """seed 001: a bad token (401) or a bad app key (403) stops the venue."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (500, b'{"error": "Unexpected server error"}'),
            (503, b""),
            (200, b"<html>"),
            (200, b'{"Status": "Cance'),
            (200, b""),
            (404, b"<html>nginx</html>"),
        ],
    )
    def test_unknown_outcome_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried, never `rejected` or success."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.TRANSIENT

    @pytest.mark.parametrize(("headers", "retry_after"), [({}, None), ({"retry-after": "3"}, 3.0)])
    def test_429_pauses_the_venue(self, headers: dict[str, str], retry_after: float | None) -> None:
        """A 429 is transient and rate-limited, honouring Retry-After when there is one."""
        verdict = VENUE.classify(reply(429, b"", **headers))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.rate_limited and verdict.retry_after == retry_after


class TestAgainstSimulator:
    @pytest.mark.parametrize(
        ("state", "outcome", "after"),
        [
            (OrderState.OPEN, Outcome.CANCELED, OrderState.CANCELED),
            (OrderState.OPEN_ASYNC, Outcome.CANCEL_PENDING, OrderState.PENDING),
            (OrderState.PENDING, Outcome.CANCEL_PENDING, OrderState.PENDING),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED, OrderState.FILLED),
            (OrderState.CANCELED, Outcome.ALREADY_CLOSED, OrderState.CANCELED),
            (None, Outcome.NOT_FOUND, None),
        ],
    )
    async def test_book_state_to_outcome(
        self,
        serve_simulators: ServeSimulators,
        state: OrderState | None,
        outcome: Outcome,
        after: OrderState | None,
    ) -> None:
        """Over real HTTP, the simulator's answer for each book state classifies as expected."""
        simulator = EtnaSimulator(credentials=CREDENTIALS, settle_after=60.0)
        if state is not None:
            simulator.seed({"73552": state})
            simulator.pending_since["73552"] = float("inf")  # a seeded PENDING stays pending
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session, server.url("etna"), VENUE.build_cancel(row(), now=0.0), timeout=2.0
            )
        assert VENUE.classify(answer).outcome is outcome
        assert simulator.requests["73552"] == 1
        assert simulator.book.get("73552") is after

    @pytest.mark.parametrize(
        ("credentials", "status", "words"),
        [
            (
                {"BATCHCANCEL_ETNA_APP_KEY": "wrong", "BATCHCANCEL_ETNA_TOKEN": TOKEN},
                403,
                b"Application key is not defined",
            ),
            (
                {"BATCHCANCEL_ETNA_APP_KEY": APP_KEY, "BATCHCANCEL_ETNA_TOKEN": "wrong"},
                401,
                b"Authorization has been denied",
            ),
            (
                {"BATCHCANCEL_ETNA_APP_KEY": "wrong", "BATCHCANCEL_ETNA_TOKEN": "wrong"},
                403,
                b"Application key is not defined",
            ),
        ],
    )
    async def test_wrong_credentials_are_refused(
        self,
        serve_simulators: ServeSimulators,
        credentials: dict[str, str],
        status: int,
        words: bytes,
    ) -> None:
        """The simulator checks the app key, then the token; the adapter stops the venue."""
        simulator = EtnaSimulator(credentials=CREDENTIALS)
        simulator.seed({"73552": OrderState.OPEN})
        wrong = EtnaVenue(credentials)
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session, server.url("etna"), wrong.build_cancel(row(), now=0.0), timeout=2.0
            )
        assert answer.status == status and words in answer.body
        assert VENUE.classify(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.book["73552"] is OrderState.OPEN

    async def test_rate_limit_answers_429(self, serve_simulators: ServeSimulators) -> None:
        """Past its limit the simulator answers 429 and the adapter pauses the venue."""
        simulator = EtnaSimulator(credentials=CREDENTIALS, rate_limit=2, period=10.0, penalty=10.0)
        simulator.seed({str(i): OrderState.OPEN for i in range(3)})
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            verdicts = [
                VENUE.classify(
                    await send(
                        session,
                        server.url("etna"),
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


class TestTransport:
    async def test_dropped_connection_is_not_resent(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """aiohttp's silent re-send of a DELETE is off: a drop reaches the venue exactly once."""
        simulator = EtnaSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("42", Fault.DROP)
        )
        simulator.seed({"42": OrderState.OPEN, "1": OrderState.OPEN})
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            # A first request makes the connection a kept-alive one, as in a real run.
            await send(
                session, server.url("etna"), VENUE.build_cancel(row("1"), now=0.0), timeout=2.0
            )
            with pytest.raises(TransientVenueError):
                await send(
                    session, server.url("etna"), VENUE.build_cancel(row("42"), now=0.0), timeout=2.0
                )
        assert simulator.requests["42"] == 1
        assert simulator.book["42"] is OrderState.OPEN

    async def test_drop_after_cancel_is_not_resent(self, serve_simulators: ServeSimulators) -> None:
        """A cancel applied but unanswered is transient and sent once; a re-send then sees 409."""
        simulator = EtnaSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("42", Fault.DROP_AFTER)
        )
        simulator.seed({"42": OrderState.OPEN})
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            with pytest.raises(TransientVenueError):
                await send(
                    session, server.url("etna"), VENUE.build_cancel(row("42"), now=0.0), timeout=2.0
                )
            again = await send(
                session, server.url("etna"), VENUE.build_cancel(row("42"), now=0.0), timeout=2.0
            )
        assert simulator.requests["42"] == 2
        assert VENUE.classify(again).outcome is Outcome.ALREADY_CLOSED


class TestConfirm:
    def test_no_status_request(self) -> None:
        """VENUES.md names no order-status endpoint for ETNA: nothing to confirm with."""
        assert VENUE.build_status(row(), now=0.0) is None
        assert EtnaVenue({}).build_status(row(), now=0.0) is None

    def test_a_status_answer_is_never_read_as_success(self) -> None:
        """Were one ever classified, it would go to a human, not pass as confirmed."""
        verdict = VENUE.classify_status(reply(200, b'{"Status": "Canceled"}'))
        assert verdict.outcome is Outcome.REJECTED

    async def test_simulator_has_no_status_route(self, serve_simulators: ServeSimulators) -> None:
        """A GET on the order's path is no cancel: not routed, not counted as one."""
        simulator = EtnaSimulator(credentials=CREDENTIALS)
        simulator.seed({"73552": OrderState.PENDING})
        async with (
            serve_simulators({"etna": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            request = VENUE.build_cancel(row(), now=0.0)
            get = CancelRequest("GET", request.path, request.headers)
            answer = await send(session, server.url("etna"), get, timeout=2.0)
        assert answer.status == 405
        assert simulator.requests["73552"] == 0
        assert simulator.book["73552"] is OrderState.PENDING
