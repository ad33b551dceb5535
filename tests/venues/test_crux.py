"""Crux adapter: the exact request, and every answer of VENUES.md's Crux table."""

from __future__ import annotations

import pytest

from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.crux import CruxSimulator
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest, OrderRow, Reply, VerdictKind
from batchcancel.venues.crux import CruxVenue
from tests.conftest import CREDENTIALS, ServeSimulators

VENUE = CruxVenue(CREDENTIALS)
TOKEN = CREDENTIALS["BATCHCANCEL_CRUX_TOKEN"]
UUID = "521a91e5-058d-4474-aeee-f0c148594a00"  # seed 002's example


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status=status, headers=headers, body=body)


def row(order_id: str = UUID) -> OrderRow:
    return OrderRow("crux", order_id)


def uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


class TestBuild:
    def test_patch_with_token_and_json_body(self) -> None:
        """seed 002: PATCH /orders/cancel/ with `Authorization: Token` and {"order_uuid": ...}."""
        request = VENUE.build_cancel(row(), now=0.0)
        assert request.method == "PATCH"
        assert request.path == "/orders/cancel/"
        assert request.headers == (
            ("Authorization", f"Token {TOKEN}"),
            ("Content-Type", "application/json; charset=utf-8"),
        )
        assert request.body == b'{"order_uuid": "521a91e5-058d-4474-aeee-f0c148594a00"}'

    def test_uuid_is_sent_as_given(self) -> None:
        """An upper-case UUID is valid and sent unchanged."""
        upper = UUID.upper()
        assert VENUE.validate(row(upper)) is None
        assert (
            VENUE.build_cancel(row(upper), now=0.0).body == f'{{"order_uuid": "{upper}"}}'.encode()
        )

    @pytest.mark.parametrize(
        "order_id",
        [
            "",
            "12345",
            UUID.replace("-", ""),
            "{" + UUID + "}",
            "urn:uuid:" + UUID,
            UUID + " ",
            UUID[:-1] + "g",
            UUID[:-1],
            UUID + "0",
        ],
    )
    def test_invalid_ids(self, order_id: str) -> None:
        """Anything but a canonical 8-4-4-4-12 hex UUID is invalid and never sent."""
        assert VENUE.validate(row(order_id)) is not None

    def test_missing_token_is_a_credentials_problem(self) -> None:
        """Without its variable the venue reports which one is missing."""
        assert CruxVenue({}).credentials_problem() == "BATCHCANCEL_CRUX_TOKEN is not set"
        assert VENUE.credentials_problem() is None


CASES = [
    pytest.param(204, b"", Outcome.CANCEL_PENDING, id="204"),
    pytest.param(200, b"", Outcome.CANCEL_PENDING, id="200-empty"),
    pytest.param(200, b'{"order_uuid": "x"}', Outcome.CANCEL_PENDING, id="200-json"),
    pytest.param(404, b'{"detail": "Not found."}', Outcome.NOT_FOUND, id="404"),
    pytest.param(404, b"", Outcome.NOT_FOUND, id="404-no-body"),
    pytest.param(422, b'{"detail": "Cannot cancel."}', Outcome.REJECTED, id="422"),
    pytest.param(422, b"", Outcome.REJECTED, id="422-no-body"),
    pytest.param(400, b'{"order_uuid": ["Must be a valid UUID."]}', Outcome.REJECTED, id="400"),
    pytest.param(415, b'{"detail": "Unsupported media type"}', Outcome.REJECTED, id="415"),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "body", "outcome"), CASES)
    def test_final_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Each documented or assumed answer lands on its outcome."""
        verdict = VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    def test_rejection_records_the_reason(self) -> None:
        """A 422 keeps the venue's words for a human."""
        verdict = VENUE.classify(reply(422, b'{"detail": "Order has already shipped."}'))
        assert "order has already shipped." in verdict.reason

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (401, b'{"detail": "Invalid token."}'),
            (403, b'{"detail": "You do not have permission to perform this action."}'),
            (409, b""),
        ],
    )
    def test_auth_refused(self, status: int, body: bytes) -> None:
        """401, 403 (no cancel_order permission) and 409 (wrong account type) stop the venue."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (500, b"oops"),
            (503, b""),
            (200, b"<html>"),
            (200, b'{"status": "cance'),
            (404, b"<html>"),
        ],
    )
    def test_unknown_outcome_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried, never `rejected` or success."""
        assert VENUE.classify(reply(status, body)).kind is VerdictKind.TRANSIENT

    @pytest.mark.parametrize(("headers", "retry_after"), [({}, None), ({"retry-after": "2"}, 2.0)])
    def test_429_pauses_the_venue(self, headers: dict[str, str], retry_after: float | None) -> None:
        """A 429 is transient and rate-limited, honouring Retry-After when there is one."""
        verdict = VENUE.classify(reply(429, b"", **headers))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.rate_limited and verdict.retry_after == retry_after


class TestAgainstSimulator:
    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.CANCEL_PENDING),
            (OrderState.OPEN_ASYNC, Outcome.CANCEL_PENDING),
            (OrderState.PENDING, Outcome.CANCEL_PENDING),
            (OrderState.CANCELED, Outcome.CANCEL_PENDING),
            (OrderState.FILLED, Outcome.REJECTED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_outcome(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Over real HTTP, the simulator's answer for each book state classifies as expected."""
        simulator = CruxSimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({UUID: state})
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session, server.url("crux"), VENUE.build_cancel(row(), now=0.0), timeout=2.0
            )
        assert VENUE.classify(answer).outcome is outcome
        assert simulator.requests[UUID] == 1

    async def test_repeat_cancel_answers_as_the_first(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """SPEC: Crux answers a repeat cancel as it answered the first, cancel_pending."""
        simulator = CruxSimulator(credentials=CREDENTIALS)
        simulator.seed({UUID: OrderState.OPEN})
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            answers = [
                await send(
                    session, server.url("crux"), VENUE.build_cancel(row(), now=0.0), timeout=2.0
                )
                for _ in range(2)
            ]
        assert [a.status for a in answers] == [204, 204]
        assert simulator.requests[UUID] == 2
        assert simulator.book[UUID] is OrderState.CANCELED

    @pytest.mark.parametrize(
        "body", [b"not json", b'{"order_uuid": 5}', b"{}", b'{"order_uuid": "12345"}']
    )
    async def test_malformed_body_is_400(
        self, serve_simulators: ServeSimulators, body: bytes
    ) -> None:
        """A body without a UUID gets 400, which the adapter records as rejected."""
        simulator = CruxSimulator(credentials=CREDENTIALS)
        request = CancelRequest(
            "PATCH",
            "/orders/cancel/",
            (("Authorization", f"Token {TOKEN}"), ("Content-Type", "application/json")),
            body,
        )
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            answer = await send(session, server.url("crux"), request, timeout=2.0)
        assert answer.status == 400
        assert VENUE.classify(answer).outcome is Outcome.REJECTED

    @pytest.mark.parametrize("token", ["wrong", ""])
    async def test_wrong_token_is_refused(
        self, serve_simulators: ServeSimulators, token: str
    ) -> None:
        """The simulator checks the Token; the adapter reads its 401 as a refusal."""
        simulator = CruxSimulator(credentials=CREDENTIALS)
        simulator.seed({UUID: OrderState.OPEN})
        wrong = CruxVenue({"BATCHCANCEL_CRUX_TOKEN": token})
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            answer = await send(
                session, server.url("crux"), wrong.build_cancel(row(), now=0.0), timeout=2.0
            )
        assert answer.status == 401 and b'"detail"' in answer.body
        assert VENUE.classify(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.book[UUID] is OrderState.OPEN

    async def test_rate_limit_answers_429(self, serve_simulators: ServeSimulators) -> None:
        """Past its limit the simulator answers 429 and the adapter pauses the venue."""
        simulator = CruxSimulator(credentials=CREDENTIALS, rate_limit=2, period=10.0, penalty=10.0)
        simulator.seed({uuid(i): OrderState.OPEN for i in range(3)})
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=2) as session,
        ):
            verdicts = [
                VENUE.classify(
                    await send(
                        session,
                        server.url("crux"),
                        VENUE.build_cancel(row(uuid(i)), now=0.0),
                        timeout=2.0,
                    )
                )
                for i in range(3)
            ]
        assert [v.outcome for v in verdicts[:2]] == [Outcome.CANCEL_PENDING] * 2
        assert verdicts[2].rate_limited
        assert simulator.rate_limited == 1
        assert simulator.book[uuid(2)] is OrderState.OPEN


class TestTransport:
    async def test_dropped_connection_is_not_resent(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """A drop on a kept-alive connection reaches the venue exactly once."""
        simulator = CruxSimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script(UUID, Fault.DROP)
        )
        simulator.seed({UUID: OrderState.OPEN, uuid(1): OrderState.OPEN})
        async with (
            serve_simulators({"crux": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            # A first request makes the connection a kept-alive one, as in a real run.
            await send(
                session, server.url("crux"), VENUE.build_cancel(row(uuid(1)), now=0.0), timeout=2.0
            )
            with pytest.raises(TransientVenueError):
                await send(
                    session, server.url("crux"), VENUE.build_cancel(row(), now=0.0), timeout=2.0
                )
        assert simulator.requests[UUID] == 1
        assert simulator.book[UUID] is OrderState.OPEN
