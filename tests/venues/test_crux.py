"""Crux adapter: the exact request, and every answer of VENUES.md's Crux table."""

from __future__ import annotations

import asyncio
import json

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
        assert "Order has already shipped." in verdict.reason

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


def status_request(venue: CruxVenue, order_id: str = UUID) -> CancelRequest:
    request = venue.build_status(row(order_id), now=0.0)
    assert request is not None
    return request


async def exchange(
    serve_simulators: ServeSimulators, simulator: CruxSimulator, *steps: CancelRequest | float
) -> list[Reply]:
    """Send each request in turn (a number: sleep that long first); the answers, in order."""
    answers = []
    async with (
        serve_simulators({"crux": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                answers.append(await send(session, server.url("crux"), step, timeout=2.0))
    return answers


def order(*statuses: str) -> bytes:
    """A Crux order with one line item per status."""
    items = [{"uuid": uuid(n), "sku_id": f"SKU-{n}", "status": s} for n, s in enumerate(statuses)]
    return json.dumps({"uuid": UUID, "line_items": items}).encode()


STATUS_CASES = [
    pytest.param(order("Cancelled", "Cancelled"), Outcome.CANCELED, id="all-cancelled"),
    pytest.param(order("CANCELLED"), Outcome.CANCELED, id="cancelled-upper"),
    pytest.param(order("Canceled"), Outcome.CANCELED, id="canceled-us"),
    pytest.param(order("Cancelled", "Allocated"), Outcome.CANCEL_PENDING, id="one-still-open"),
    pytest.param(order("Allocated", "Allocated"), Outcome.CANCEL_PENDING, id="allocated"),
    pytest.param(order("Unallocated"), Outcome.CANCEL_PENDING, id="unallocated"),
    pytest.param(order("Backordered"), Outcome.CANCEL_PENDING, id="backordered"),
    pytest.param(order("HasTracking"), Outcome.ALREADY_CLOSED, id="shipped"),
    pytest.param(order("Cancelled", "HasTracking"), Outcome.ALREADY_CLOSED, id="part-shipped"),
    pytest.param(order("Cancelled", "Rejected"), Outcome.ALREADY_CLOSED, id="rejected-items"),
    pytest.param(order("Rejected", "Allocated"), Outcome.CANCEL_PENDING, id="rejected-and-open"),
    pytest.param(order("Lost"), Outcome.REJECTED, id="unknown-status"),
    pytest.param(order(), Outcome.REJECTED, id="no-line-items"),
    pytest.param(b'{"uuid": "x", "line_items": [{"uuid": "y"}]}', Outcome.REJECTED, id="no-status"),
    pytest.param(b'{"uuid": "x"}', Outcome.REJECTED, id="no-line-items-key"),
]


class TestConfirm:
    def test_status_request_is_a_get_with_token(self) -> None:
        """VENUES.md (Confirm): GET /orders/<uuid>/ with the Token and no body."""
        request = status_request(VENUE)
        assert request.method == "GET"
        assert request.path == f"/orders/{UUID}/"
        assert request.headers == (("Authorization", f"Token {TOKEN}"),)
        assert request.body is None
        assert status_request(VENUE, UUID.upper()).path == f"/orders/{UUID.upper()}/"

    @pytest.mark.parametrize(("body", "outcome"), STATUS_CASES)
    def test_line_items(self, body: bytes, outcome: Outcome) -> None:
        """Every item Cancelled confirms; shipped items close it; items still with the supplier
        are pending (Crux has no cancel-requested state); anything else goes to a human."""
        verdict = VENUE.classify_status(reply(200, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    @pytest.mark.parametrize(("body"), [b'{"detail": "Not found."}', b""])
    def test_unknown_order(self, body: bytes) -> None:
        """Crux docs (order detail): 404 Not Found."""
        assert VENUE.classify_status(reply(404, body)).outcome is Outcome.NOT_FOUND

    @pytest.mark.parametrize("status", [401, 403, 409])
    def test_auth_refused(self, status: int) -> None:
        """401, 403 and 409 stop the venue, as for cancels."""
        verdict = VENUE.classify_status(reply(status, b'{"detail": "Invalid token."}'))
        assert verdict.kind is VerdictKind.AUTH_REFUSED

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b"oops"), (503, b""), (429, b""), (200, b"<html>"), (404, b"<html>")],
    )
    def test_unknown_status_is_transient(self, status: int, body: bytes) -> None:
        """429, 5xx and unparsable bodies are retried."""
        assert VENUE.classify_status(reply(status, body)).kind is VerdictKind.TRANSIENT

    async def test_pending_cancel_settles(self, serve_simulators: ServeSimulators) -> None:
        """Over HTTP: the supplier has not confirmed (items Allocated: pending), then has
        (every item Cancelled); status reads are counted apart from the one cancel."""
        simulator = CruxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({UUID: OrderState.OPEN_ASYNC})
        status = status_request(VENUE)
        answers = await exchange(
            serve_simulators, simulator, VENUE.build_cancel(row(), now=0.0), status, 0.6, status
        )
        assert VENUE.classify(answers[0]).outcome is Outcome.CANCEL_PENDING
        assert VENUE.classify_status(answers[1]).outcome is Outcome.CANCEL_PENDING
        assert VENUE.classify_status(answers[2]).outcome is Outcome.CANCELED
        assert [i["status"] for i in json.loads(answers[2].body)["line_items"]] == [
            "Cancelled",
            "Cancelled",
        ]
        assert simulator.requests[UUID] == 1
        assert simulator.status_requests[UUID] == 2
        assert simulator.total_requests == 3

    async def test_fill_wins_the_race(self, serve_simulators: ServeSimulators) -> None:
        """A supplier who ships instead of cancelling: already_closed."""
        simulator = CruxSimulator(credentials=CREDENTIALS, settle_after=0.5)
        simulator.seed({UUID: OrderState.OPEN_ASYNC})
        simulator.will_fill.add(UUID)
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
        simulator = CruxSimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({UUID: state})
        [answer] = await exchange(serve_simulators, simulator, status_request(VENUE))
        assert VENUE.classify_status(answer).outcome is outcome
        assert simulator.book.get(UUID) is state
        assert simulator.requests[UUID] == 0
        assert simulator.status_requests[UUID] == 1

    async def test_wrong_token_is_refused(self, serve_simulators: ServeSimulators) -> None:
        """The status route checks the token as the cancel route does."""
        simulator = CruxSimulator(credentials=CREDENTIALS)
        simulator.seed({UUID: OrderState.PENDING})
        wrong = CruxVenue({"BATCHCANCEL_CRUX_TOKEN": "wrong"})
        [answer] = await exchange(serve_simulators, simulator, status_request(wrong))
        assert answer.status == 401
        assert VENUE.classify_status(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.requests[UUID] == 0
        assert simulator.status_requests[UUID] == 1
