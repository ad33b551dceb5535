"""ZebPay adapter: the signature, the exact request, and every answer of VENUES.md's table."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from batchcancel.errors import TransientVenueError
from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.zebpay import ZebpaySimulator
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest, OrderRow, Reply, VerdictKind
from batchcancel.venues.zebpay import API_KEY_VAR, API_SECRET_VAR, JWT_VAR, ZebpayVenue, sign
from tests.conftest import CREDENTIALS, ServeSimulators

HMAC_VENUE = ZebpayVenue({k: CREDENTIALS[k] for k in (API_KEY_VAR, API_SECRET_VAR)})
JWT_VENUE = ZebpayVenue({JWT_VAR: CREDENTIALS[JWT_VAR]})
VECTOR_BODY = b'{"clientOrderId":"myLimitOrder456","symbol":"BTCUSDT","timestamp":1712345678901}'
VECTOR_SIGNATURE = "6023f65d87ada69f4c6c5b36e8e9ce0fb49b61f9217d613d9ecf7686d55dfd88"


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status=status, headers=headers, body=body)


def envelope(status: int, message: str, data: object = None) -> bytes:
    """ZebPay's envelope, as error-handling.md shows it."""
    return json.dumps(
        {
            "statusDescription": message,
            "data": {} if data is None else data,
            "statusCode": status,
            "customMessage": [message],
        }
    ).encode()


def row(order_id: str = "c1", symbol: str = "BTCUSDT") -> OrderRow:
    return OrderRow("zebpay", order_id, symbol=symbol)


class TestSign:
    def test_vector(self) -> None:
        """VENUES.md's test vector, bit for bit."""
        assert sign("test-secret", VECTOR_BODY) == VECTOR_SIGNATURE

    def test_spaced_json_signs_differently(self) -> None:
        """The exact bytes matter: the same object with spaces has another signature."""
        spaced = json.dumps(json.loads(VECTOR_BODY)).encode()
        assert sign("test-secret", spaced) != VECTOR_SIGNATURE


class TestBuild:
    def test_signed_request_reproduces_the_vector(self) -> None:
        """API key mode: timestamp added last, compact JSON, those exact bytes signed and sent."""
        venue = ZebpayVenue({API_KEY_VAR: "my-key", API_SECRET_VAR: "test-secret"})
        request = venue.build_cancel(row("myLimitOrder456"), now=1712345678.901)
        assert request.method == "DELETE"
        assert request.path == "/api/v1/trade/order"
        assert request.body == VECTOR_BODY
        assert request.headers == (
            ("x-auth-apikey", "my-key"),
            ("x-auth-signature", VECTOR_SIGNATURE),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        )

    def test_symbol_left_out_when_the_row_has_none(self) -> None:
        """VENUES.md: leave `symbol` out when the row has none."""
        request = HMAC_VENUE.build_cancel(row("c1", symbol=""), now=1.5)
        assert request.body == b'{"clientOrderId":"c1","timestamp":1500}'

    def test_jwt_mode_sends_bearer_and_no_timestamp(self) -> None:
        """JWT mode: `Authorization: Bearer`, the compact body, no timestamp, no signature."""
        request = JWT_VENUE.build_cancel(row(), now=1712345678.901)
        assert request.headers[0] == ("Authorization", f"Bearer {CREDENTIALS[JWT_VAR]}")
        assert all(name.lower() != "x-auth-signature" for name, _ in request.headers)
        assert request.body == b'{"clientOrderId":"c1","symbol":"BTCUSDT"}'

    def test_api_key_wins_when_both_are_set(self) -> None:
        """With every variable set the request is signed."""
        request = ZebpayVenue(CREDENTIALS).build_cancel(row(), now=0.0)
        assert dict(request.headers)["x-auth-apikey"] == CREDENTIALS[API_KEY_VAR]

    @pytest.mark.parametrize(
        ("credentials", "problem"),
        [
            (
                {},
                "BATCHCANCEL_ZEBPAY_JWT is not set, nor BATCHCANCEL_ZEBPAY_API_KEY and "
                "BATCHCANCEL_ZEBPAY_API_SECRET",
            ),
            (
                {API_KEY_VAR: "k"},
                "BATCHCANCEL_ZEBPAY_API_SECRET is not set (needed with BATCHCANCEL_ZEBPAY_API_KEY)",
            ),
            (
                {API_SECRET_VAR: "s"},
                "BATCHCANCEL_ZEBPAY_API_KEY is not set (needed with BATCHCANCEL_ZEBPAY_API_SECRET)",
            ),
            ({JWT_VAR: "j"}, None),
            ({API_KEY_VAR: "k", API_SECRET_VAR: "s"}, None),
        ],
    )
    def test_credentials_problem(self, credentials: dict[str, str], problem: str | None) -> None:
        """A JWT, or a key with its secret; otherwise the missing variables are named."""
        assert ZebpayVenue(credentials).credentials_problem() == problem

    @pytest.mark.parametrize(
        ("order_id", "symbol"),
        [
            ("", "BTCUSDT"),
            ("has space", ""),
            ("x" * 129, ""),
            ("caf\u00e9", ""),
            ("c1", "btcusdt"),
            ("c1", "BTC-USDT"),
        ],
    )
    def test_invalid_rows(self, order_id: str, symbol: str) -> None:
        """Empty, spaced, overlong or non-ASCII ids, and odd symbols, are never sent."""
        assert HMAC_VENUE.validate(row(order_id, symbol)) is not None

    @pytest.mark.parametrize("symbol", ["", "BTCUSDT"])
    def test_valid_rows(self, symbol: str) -> None:
        """A client order id like the docs' example, with or without a symbol, is valid."""
        assert HMAC_VENUE.validate(row("598d3bda315afed6f07f-370-zeb", symbol)) is None


SUCCESS_DATA = {"clientOrderId": "c1", "status": "canceled", "symbol": "BTCUSDT"}
CASES = [
    pytest.param(200, envelope(200, "Success", SUCCESS_DATA), Outcome.CANCELED, id="200-success"),
    pytest.param(200, envelope(200, "OK", SUCCESS_DATA), Outcome.CANCELED, id="200-ok"),
    pytest.param(
        200,
        envelope(200, "Success", {**SUCCESS_DATA, "status": "new"}),
        Outcome.REJECTED,
        id="200-success-text-but-not-canceled",
    ),
    pytest.param(
        200, envelope(500, "Success", SUCCESS_DATA), Outcome.REJECTED, id="200-bad-statusCode"
    ),
    pytest.param(400, envelope(400, "Order not found"), Outcome.NOT_FOUND, id="400-not-found"),
    pytest.param(404, envelope(404, "Order not found"), Outcome.NOT_FOUND, id="404-not-found"),
    pytest.param(
        400,
        envelope(400, "Order already canceled or filled"),
        Outcome.ALREADY_CLOSED,
        id="400-already",
    ),
    pytest.param(400, envelope(400, "Order is closed"), Outcome.ALREADY_CLOSED, id="400-closed"),
    pytest.param(400, envelope(400, "Order filled"), Outcome.ALREADY_CLOSED, id="400-filled"),
    pytest.param(403, envelope(403, "Forbidden request"), Outcome.REJECTED, id="403-forbidden"),
    pytest.param(403, envelope(403, "forbidden request"), Outcome.REJECTED, id="403-forbidden-lc"),
    pytest.param(400, envelope(400, "Invalid quantity"), Outcome.REJECTED, id="400-other"),
    pytest.param(409, envelope(409, "Conflict"), Outcome.REJECTED, id="409-unclassified"),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "body", "outcome"), CASES)
    def test_final_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """Each documented or assumed answer lands on its outcome."""
        verdict = HMAC_VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    @pytest.mark.parametrize(
        ("status", "message"),
        [
            (400, "Invalid signature"),
            (401, "Unauthorized"),
            (403, "You do not have the required scope futures:trading"),
            (403, "You are not allowed API access from this ip"),
        ],
    )
    def test_auth_refused(self, status: int, message: str) -> None:
        """Bad signatures, 401s and scope / IP 403s stop the venue."""
        verdict = HMAC_VENUE.classify(reply(status, envelope(status, message)))
        assert verdict.kind is VerdictKind.AUTH_REFUSED

    def test_expired_timestamp_is_transient_once(self) -> None:
        """ASSUMED (VENUES.md): retried once with a fresh timestamp, escalated if it repeats."""
        verdict = HMAC_VENUE.classify(reply(400, envelope(400, "Invalid or expired timestamp")))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.escalate_on_repeat
        assert not verdict.rate_limited

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (500, envelope(500, "Internal server error")),
            (502, b"<html>bad gateway</html>"),
            (200, b"<html>"),
            (200, b'{"statusDescription":"OK","da'),
            (400, b""),
            (404, b"<h1>"),
        ],
    )
    def test_unknown_outcome_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried, never `rejected` or success."""
        verdict = HMAC_VENUE.classify(reply(status, body))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert not verdict.escalate_on_repeat

    def test_429_with_retry_after(self) -> None:
        """The documented 429 pauses the venue for Retry-After seconds."""
        message = "Too many requests. Limit 180 requests per 60 seconds."
        verdict = HMAC_VENUE.classify(reply(429, envelope(429, message), **{"retry-after": "60"}))
        assert verdict.kind is VerdictKind.TRANSIENT
        assert verdict.rate_limited and verdict.retry_after == 60.0


async def send_all(
    serve_simulators: ServeSimulators, simulator: ZebpaySimulator, *requests: CancelRequest
) -> list[Reply]:
    async with (
        serve_simulators({"zebpay": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        return [await send(session, server.url("zebpay"), r, timeout=2.0) for r in requests]


class TestAgainstSimulator:
    @pytest.mark.parametrize(
        ("state", "outcome"),
        [
            (OrderState.OPEN, Outcome.CANCELED),
            (OrderState.OPEN_ASYNC, Outcome.CANCELED),
            (OrderState.PENDING, Outcome.CANCELED),
            (OrderState.FILLED, Outcome.ALREADY_CLOSED),
            (OrderState.CANCELED, Outcome.ALREADY_CLOSED),
            (None, Outcome.NOT_FOUND),
        ],
    )
    async def test_book_state_to_outcome(
        self, serve_simulators: ServeSimulators, state: OrderState | None, outcome: Outcome
    ) -> None:
        """Over real HTTP with a signed request, each book state classifies as expected."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, settle_after=60.0)
        if state is not None:
            simulator.seed({"c1": state})
            simulator.pending_since["c1"] = time.monotonic()  # a PENDING cancel is under way
        [answer] = await send_all(
            serve_simulators, simulator, HMAC_VENUE.build_cancel(row(), now=time.time())
        )
        assert HMAC_VENUE.classify(answer).outcome is outcome
        assert simulator.requests["c1"] == 1
        if state is not None:
            assert simulator.state_of("c1") in (OrderState.CANCELED, OrderState.FILLED)

    async def test_jwt_mode(self, serve_simulators: ServeSimulators) -> None:
        """A Bearer JWT with an unsigned body cancels too."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.OPEN})
        [answer] = await send_all(
            serve_simulators, simulator, JWT_VENUE.build_cancel(row(symbol=""), now=0.0)
        )
        assert JWT_VENUE.classify(answer).outcome is Outcome.CANCELED
        assert json.loads(answer.body)["data"]["clientOrderId"] == "c1"

    @pytest.mark.parametrize(
        ("credentials", "status"),
        [
            ({JWT_VAR: "wrong"}, 401),
            ({API_KEY_VAR: "wrong", API_SECRET_VAR: CREDENTIALS[API_SECRET_VAR]}, 401),
            ({API_KEY_VAR: CREDENTIALS[API_KEY_VAR], API_SECRET_VAR: "wrong"}, 400),
        ],
        ids=["wrong-jwt", "wrong-api-key", "wrong-hmac-secret"],
    )
    async def test_wrong_credentials_are_refused(
        self, serve_simulators: ServeSimulators, credentials: dict[str, str], status: int
    ) -> None:
        """The simulator checks the JWT, the key and the signature; each refusal stops the venue."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.OPEN})
        request = ZebpayVenue(credentials).build_cancel(row(), now=time.time())
        [answer] = await send_all(serve_simulators, simulator, request)
        assert answer.status == status
        assert HMAC_VENUE.classify(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.book["c1"] is OrderState.OPEN

    async def test_signature_covers_the_exact_bytes(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """The same object re-serialized with spaces no longer matches its signature."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.OPEN})
        signed = HMAC_VENUE.build_cancel(row(), now=time.time())
        assert signed.body is not None
        spaced = CancelRequest(
            signed.method, signed.path, signed.headers, json.dumps(json.loads(signed.body)).encode()
        )
        [answer] = await send_all(serve_simulators, simulator, spaced)
        assert json.loads(answer.body)["statusDescription"] == "Invalid signature"
        assert simulator.book["c1"] is OrderState.OPEN

    async def test_stale_timestamp_then_fresh(self, serve_simulators: ServeSimulators) -> None:
        """A timestamp a minute old is refused as expired; re-signed with a fresh one it works."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.OPEN})
        stale, fresh = await send_all(
            serve_simulators,
            simulator,
            HMAC_VENUE.build_cancel(row(), now=time.time() - 60.0),
            HMAC_VENUE.build_cancel(row(), now=time.time()),
        )
        verdict = HMAC_VENUE.classify(stale)
        assert verdict.kind is VerdictKind.TRANSIENT and verdict.escalate_on_repeat
        assert HMAC_VENUE.classify(fresh).outcome is Outcome.CANCELED

    async def test_limit_is_counted_before_auth(self, serve_simulators: ServeSimulators) -> None:
        """Refused requests use up the budget; the next answer is the documented 429."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=2, penalty=7.0)
        simulator.seed({"c1": OrderState.OPEN})
        wrong = ZebpayVenue({JWT_VAR: "wrong"}).build_cancel(row(), now=0.0)
        *refused, limited = await send_all(
            serve_simulators,
            simulator,
            wrong,
            wrong,
            HMAC_VENUE.build_cancel(row(), now=time.time()),
        )
        assert [r.status for r in refused] == [401, 401]
        assert limited.status == 429
        assert json.loads(limited.body)["customMessage"] == [
            "Too many requests. Limit 2 requests per 60 seconds."
        ]
        verdict = HMAC_VENUE.classify(limited)
        assert verdict.rate_limited and verdict.retry_after == 7.0
        assert simulator.book["c1"] is OrderState.OPEN

    async def test_documented_429_text_by_default(self, serve_simulators: ServeSimulators) -> None:
        """With its documented limit, a 429 says exactly what ZebPay's docs say."""
        simulator = ZebpaySimulator(
            credentials=CREDENTIALS, faults=FaultPlan(retry_after=3).script("c1", Fault.RATE_LIMIT)
        )
        [answer] = await send_all(
            serve_simulators, simulator, HMAC_VENUE.build_cancel(row(), now=time.time())
        )
        assert json.loads(answer.body)["statusDescription"] == (
            "Too many requests. Limit 180 requests per 60 seconds."
        )
        assert answer.headers["retry-after"] == "3"


class TestTransport:
    async def test_dropped_connection_is_not_resent(
        self, serve_simulators: ServeSimulators
    ) -> None:
        """aiohttp's silent re-send of a DELETE is off: a drop reaches the venue exactly once."""
        simulator = ZebpaySimulator(
            credentials=CREDENTIALS, faults=FaultPlan().script("c1", Fault.DROP)
        )
        simulator.seed({"c1": OrderState.OPEN, "c0": OrderState.OPEN})
        async with (
            serve_simulators({"zebpay": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            # A first request makes the connection a kept-alive one, as in a real run.
            await send(
                session,
                server.url("zebpay"),
                HMAC_VENUE.build_cancel(row("c0"), now=time.time()),
                timeout=2.0,
            )
            with pytest.raises(TransientVenueError):
                await send(
                    session,
                    server.url("zebpay"),
                    HMAC_VENUE.build_cancel(row("c1"), now=time.time()),
                    timeout=2.0,
                )
        assert simulator.requests["c1"] == 1
        assert simulator.book["c1"] is OrderState.OPEN


# ZebPay authentication docs: a GET signs its query string; the docs' own example, and this
# order-status query (derived with the documented rule, secret `test-secret`).
DOCS_GET_QUERY = b"symbol=BTCUSDT&timestamp=1712345678901"
DOCS_GET_SIGNATURE = "4057c6ef6894e430a0cc4369699ea86bf3196777d91f8be1073de6abf170bdd7"
STATUS_QUERY = "id=myLimitOrder456&timestamp=1712345678901"
STATUS_SIGNATURE = "971c23aae181ef70ffc064c658ba590673ad5d9491351a4a784e8a4a8045d4f0"


def status_request(venue: ZebpayVenue, order_id: str = "c1", now: float = 0.0) -> CancelRequest:
    request = venue.build_status(row(order_id), now=now)
    assert request is not None
    return request


async def exchange(
    serve_simulators: ServeSimulators, simulator: ZebpaySimulator, *steps: CancelRequest | float
) -> list[Reply]:
    """Send each request in turn (a number: sleep that long first); the answers, in order."""
    answers = []
    async with (
        serve_simulators({"zebpay": simulator}) as server,
        open_session(max_connections=2) as session,
    ):
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                answers.append(await send(session, server.url("zebpay"), step, timeout=2.0))
    return answers


def pending(simulator: ZebpaySimulator, key: str = "c1") -> None:
    """A cancel under way at the venue (ZebPay's own cancel completes at once)."""
    simulator.seed({key: OrderState.PENDING})
    simulator.pending_since[key] = time.monotonic()


def order(status: object, status_code: object = 200) -> bytes:
    data = {"clientOrderId": "c1", "symbol": "BTCUSDT", "status": status}
    return json.dumps(
        {
            "statusDescription": "OK",
            "data": data,
            "statusCode": status_code,
            "customMessage": ["OK"],
        }
    ).encode()


STATUS_CASES = [
    pytest.param(200, order("canceled"), Outcome.CANCELED, id="canceled"),
    pytest.param(200, order("CANCELED"), Outcome.CANCELED, id="canceled-upper"),
    pytest.param(200, order("filled"), Outcome.ALREADY_CLOSED, id="filled"),
    pytest.param(200, order("new"), Outcome.CANCEL_PENDING, id="new"),
    pytest.param(200, order("partially_filled"), Outcome.CANCEL_PENDING, id="partially-filled"),
    pytest.param(200, order("expired"), Outcome.ALREADY_CLOSED, id="expired"),
    pytest.param(200, order("weird"), Outcome.REJECTED, id="unknown-status"),
    pytest.param(200, order(None), Outcome.REJECTED, id="no-status"),
    pytest.param(200, order("canceled", 500), Outcome.REJECTED, id="statusCode-disagrees"),
    pytest.param(404, envelope(404, "Order not found"), Outcome.NOT_FOUND, id="404-not-found"),
    pytest.param(400, envelope(400, "order not found"), Outcome.NOT_FOUND, id="400-not-found"),
    pytest.param(403, envelope(403, "Forbidden request"), Outcome.REJECTED, id="403-not-yours"),
    pytest.param(400, envelope(400, "Bad request"), Outcome.REJECTED, id="400-other"),
]


class TestConfirm:
    def test_documented_get_vector(self) -> None:
        """The docs' GET example query signs to the research notes' vector."""
        assert sign("test-secret", DOCS_GET_QUERY) == DOCS_GET_SIGNATURE

    def test_signed_status_request(self) -> None:
        """API key: `timestamp` appended to the query, that exact query string signed and sent,
        no body."""
        venue = ZebpayVenue({API_KEY_VAR: "my-key", API_SECRET_VAR: "test-secret"})
        request = status_request(venue, "myLimitOrder456", now=1712345678.901)
        assert request.method == "GET"
        assert request.path == f"/api/v1/trade/order?{STATUS_QUERY}"
        assert request.headers == (
            ("x-auth-apikey", "my-key"),
            ("x-auth-signature", STATUS_SIGNATURE),
            ("Accept", "application/json"),
        )
        assert request.body is None
        assert sign("test-secret", STATUS_QUERY.encode()) == STATUS_SIGNATURE

    def test_jwt_status_request(self) -> None:
        """JWT: the id alone, Bearer, no timestamp and no signature."""
        request = status_request(JWT_VENUE, now=1712345678.901)
        assert request.path == "/api/v1/trade/order?id=c1"
        assert request.headers == (
            ("Authorization", f"Bearer {CREDENTIALS[JWT_VAR]}"),
            ("Accept", "application/json"),
        )
        assert request.body is None

    def test_reserved_characters_are_encoded_then_signed(self) -> None:
        """An id with query syntax in it stays one parameter; the encoded form is what is signed."""
        request = status_request(HMAC_VENUE, "a/b?c&d=e+f", now=1.0)
        query = "id=a%2Fb%3Fc%26d%3De%2Bf&timestamp=1000"
        assert request.path == f"/api/v1/trade/order?{query}"
        assert dict(request.headers)["x-auth-signature"] == sign(
            CREDENTIALS[API_SECRET_VAR], query.encode()
        )

    @pytest.mark.parametrize(("status", "body", "outcome"), STATUS_CASES)
    def test_status_answers(self, status: int, body: bytes, outcome: Outcome) -> None:
        """data.status: canceled confirms, filled closed, new (no cancel-pending state) pending."""
        verdict = HMAC_VENUE.classify_status(reply(status, body))
        assert verdict.kind is VerdictKind.FINAL
        assert verdict.outcome is outcome

    @pytest.mark.parametrize(
        ("status", "message"),
        [
            (401, "Unauthorized"),
            (400, "Invalid signature"),
            (403, "You do not have the required scope"),
            (403, "You are not allowed API access from this ip"),
        ],
    )
    def test_auth_refused(self, status: int, message: str) -> None:
        """401, a bad signature and 403 scope / IP refusals stop the venue, as for cancels."""
        verdict = HMAC_VENUE.classify_status(reply(status, envelope(status, message)))
        assert verdict.kind is VerdictKind.AUTH_REFUSED

    def test_expired_timestamp_is_transient_once(self) -> None:
        """A stale timestamp is retried with a fresh one (refused if it repeats)."""
        body = envelope(400, "Invalid or expired timestamp")
        verdict = HMAC_VENUE.classify_status(reply(400, body))
        assert verdict.kind is VerdictKind.TRANSIENT and verdict.escalate_on_repeat

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, envelope(500, "Internal server error")), (503, b""), (200, b"<html>"), (404, b"")],
    )
    def test_unknown_status_is_transient(self, status: int, body: bytes) -> None:
        """5xx and unparsable bodies are retried."""
        assert HMAC_VENUE.classify_status(reply(status, body)).kind is VerdictKind.TRANSIENT

    def test_429_pauses_for_retry_after(self) -> None:
        """The documented 429 pauses the venue for Retry-After seconds."""
        body = envelope(429, "Too many requests. Limit 180 requests per 60 seconds.")
        verdict = HMAC_VENUE.classify_status(reply(429, body, **{"retry-after": "60"}))
        assert verdict.rate_limited and verdict.retry_after == 60.0

    async def test_cancel_then_status(self, serve_simulators: ServeSimulators) -> None:
        """Over HTTP, signed: the cancel completes at once and the status read confirms it; the
        status read is counted apart from the cancel, though the limit counts both."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.OPEN_ASYNC})
        now = time.time()
        answers = await exchange(
            serve_simulators,
            simulator,
            HMAC_VENUE.build_cancel(row(), now=now),
            status_request(HMAC_VENUE, now=now),
        )
        assert HMAC_VENUE.classify(answers[0]).outcome is Outcome.CANCELED
        assert HMAC_VENUE.classify_status(answers[1]).outcome is Outcome.CANCELED
        assert json.loads(answers[1].body)["data"]["status"] == "canceled"
        assert simulator.requests["c1"] == 1
        assert simulator.status_requests["c1"] == 1
        assert simulator.total_requests == 2
        assert [a.key for a in simulator.arrivals] == ["c1", "c1"]

    @pytest.mark.parametrize("venue", [HMAC_VENUE, JWT_VENUE], ids=["hmac", "jwt"])
    async def test_pending_cancel_settles(
        self, serve_simulators: ServeSimulators, venue: ZebpayVenue
    ) -> None:
        """A cancel under way reads "new" (pending), then "canceled" once it settles."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, settle_after=0.5)
        pending(simulator)
        first, second = (
            status_request(venue, now=time.time()),
            status_request(venue, now=time.time()),
        )
        answers = await exchange(serve_simulators, simulator, first, 0.6, second)
        assert json.loads(answers[0].body)["data"]["status"] == "new"
        assert venue.classify_status(answers[0]).outcome is Outcome.CANCEL_PENDING
        assert venue.classify_status(answers[1]).outcome is Outcome.CANCELED
        assert simulator.requests["c1"] == 0
        assert simulator.status_requests["c1"] == 2

    async def test_fill_wins_the_race(self, serve_simulators: ServeSimulators) -> None:
        """A cancel under way that loses to a fill reads filled: already_closed."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, settle_after=0.5)
        pending(simulator)
        simulator.will_fill.add("c1")
        answers = await exchange(
            serve_simulators, simulator, 0.6, status_request(HMAC_VENUE, now=time.time())
        )
        assert HMAC_VENUE.classify_status(answers[0]).outcome is Outcome.ALREADY_CLOSED

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
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        if state is not None:
            simulator.seed({"c1": state})
        [answer] = await exchange(
            serve_simulators, simulator, status_request(HMAC_VENUE, now=time.time())
        )
        assert HMAC_VENUE.classify_status(answer).outcome is outcome
        assert simulator.book.get("c1") is state
        assert simulator.requests["c1"] == 0
        assert simulator.status_requests["c1"] == 1

    async def test_reserved_characters_round_trip(self, serve_simulators: ServeSimulators) -> None:
        """The simulator checks the signature over the raw query and finds the decoded id."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"a/b?c&d=e+f": OrderState.CANCELED})
        request = status_request(HMAC_VENUE, "a/b?c&d=e+f", now=time.time())
        [answer] = await exchange(serve_simulators, simulator, request)
        assert HMAC_VENUE.classify_status(answer).outcome is Outcome.CANCELED
        assert simulator.status_requests["a/b?c&d=e+f"] == 1

    @pytest.mark.parametrize(
        ("credentials", "status"),
        [
            ({JWT_VAR: "wrong"}, 401),
            ({API_KEY_VAR: "wrong", API_SECRET_VAR: CREDENTIALS[API_SECRET_VAR]}, 401),
            ({API_KEY_VAR: CREDENTIALS[API_KEY_VAR], API_SECRET_VAR: "wrong"}, 400),
        ],
        ids=["wrong-jwt", "wrong-api-key", "wrong-hmac-secret"],
    )
    async def test_wrong_credentials_are_refused(
        self, serve_simulators: ServeSimulators, credentials: dict[str, str], status: int
    ) -> None:
        """The status route checks the JWT, the key and the query's signature."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.CANCELED})
        request = status_request(ZebpayVenue(credentials), now=time.time())
        [answer] = await exchange(serve_simulators, simulator, request)
        assert answer.status == status
        assert HMAC_VENUE.classify_status(answer).kind is VerdictKind.AUTH_REFUSED
        assert simulator.requests["c1"] == 0
        assert simulator.status_requests["c1"] == 1

    async def test_signature_covers_the_query(self, serve_simulators: ServeSimulators) -> None:
        """The same parameters in another order no longer match the signature."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.CANCELED})
        signed = status_request(HMAC_VENUE, now=time.time())
        path, _, query = signed.path.partition("?")
        swapped = "&".join(reversed(query.split("&")))
        tampered = CancelRequest("GET", f"{path}?{swapped}", signed.headers)
        [answer] = await exchange(serve_simulators, simulator, tampered)
        assert json.loads(answer.body)["statusDescription"] == "Invalid signature"
        assert HMAC_VENUE.classify_status(answer).kind is VerdictKind.AUTH_REFUSED

    async def test_stale_timestamp(self, serve_simulators: ServeSimulators) -> None:
        """A status query signed a minute ago is refused as expired: transient once."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"c1": OrderState.CANCELED})
        request = status_request(HMAC_VENUE, now=time.time() - 60)
        [answer] = await exchange(serve_simulators, simulator, request)
        assert json.loads(answer.body)["statusDescription"] == "Invalid or expired timestamp"
        verdict = HMAC_VENUE.classify_status(answer)
        assert verdict.kind is VerdictKind.TRANSIENT and verdict.escalate_on_repeat


class TestCancelAll:
    """VENUES.md (zebpay, Bulk): DELETE /api/v1/trade/order/all, `data` a list of orders."""

    def test_signed_request(self) -> None:
        """The body is the timestamp alone, compact, signed and sent as signed."""
        venue = ZebpayVenue({API_KEY_VAR: "my-key", API_SECRET_VAR: "test-secret"})
        request = venue.build_sweep("all", now=1712345678.901)
        assert (request.method, request.path) == ("DELETE", "/api/v1/trade/order/all")
        assert request.body == b'{"timestamp":1712345678901}'
        headers = dict(request.headers)
        assert headers["x-auth-apikey"] == "my-key"
        assert headers["x-auth-signature"] == sign("test-secret", request.body)
        assert "Authorization" not in headers

    def test_jwt_request(self) -> None:
        request = JWT_VENUE.build_sweep("all", now=0.0)
        assert request.body == b"{}"
        assert dict(request.headers)["Authorization"] == f"Bearer {CREDENTIALS[JWT_VAR]}"

    def test_one_target_for_any_rows(self) -> None:
        assert JWT_VENUE.sweep_targets([row("a"), row("b", symbol="")]) == ["all"]
        assert JWT_VENUE.sweep_targets([]) == []

    def test_listed_orders_are_canceled(self) -> None:
        data = [
            {"clientOrderId": "a", "status": "canceled", "symbol": "BTCUSDT"},
            {"clientOrderId": "b", "status": "canceled", "symbol": "ETHUSDT"},
            {"clientOrderId": "c", "status": "new", "symbol": "BTCUSDT"},  # not cancelled
            {"status": "canceled"},  # no id: ignored
        ]
        answer = JWT_VENUE.classify_sweep(reply(200, envelope(200, "OK", data)))
        assert answer.whole is None
        assert {k: v.outcome for k, v in answer.per_order.items()} == {
            "a": Outcome.CANCELED,
            "b": Outcome.CANCELED,
        }
        assert answer.symbols == {"a": "BTCUSDT", "b": "ETHUSDT"}
        assert not answer.more

    @pytest.mark.parametrize(
        ("answer", "kind"),
        [
            (reply(401, envelope(401, "Unauthorized")), VerdictKind.AUTH_REFUSED),
            (reply(400, envelope(400, "Invalid signature")), VerdictKind.AUTH_REFUSED),
            (reply(429, envelope(429, "Too many requests"), **{"retry-after": "3"}), "429"),
            (reply(503, b"down"), VerdictKind.TRANSIENT),
        ],
        ids=["401", "signature", "429", "503"],
    )
    def test_whole_answers(self, answer: Reply, kind: object) -> None:
        verdict = JWT_VENUE.classify_sweep(answer).whole
        assert verdict is not None
        if kind == "429":
            assert verdict.rate_limited and verdict.retry_after == 3.0
        else:
            assert verdict.kind is kind

    def test_anything_else_accounts_for_no_order(self) -> None:
        """A 200 whose data is not a list, or a 404: each order is then cancelled alone."""
        for answer in (
            reply(200, envelope(200, "OK", {"clientOrderId": "a", "status": "canceled"})),
            reply(404, envelope(404, "Not found")),
        ):
            swept = JWT_VENUE.classify_sweep(answer)
            assert (swept.whole, dict(swept.per_order)) == (None, {})
            assert swept.note

    async def test_against_the_simulator(self, serve_simulators: ServeSimulators) -> None:
        """Signed, the simulator cancels every open order and lists each; closed ones stay."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS)
        simulator.seed({"a": OrderState.OPEN, "b": OrderState.OPEN_ASYNC, "c": OrderState.FILLED})
        simulator.symbols["b"] = "ETHUSDT"
        async with (
            serve_simulators({"zebpay": simulator}) as server,
            open_session(max_connections=1) as session,
        ):
            answer = await send(
                session,
                server.url("zebpay"),
                HMAC_VENUE.build_sweep("all", now=time.time()),
                timeout=2.0,
            )
        swept = HMAC_VENUE.classify_sweep(answer)
        assert sorted(swept.per_order) == ["a", "b"]
        assert swept.symbols == {"a": "BTCUSDT", "b": "ETHUSDT"}
        assert simulator.book == {
            "a": OrderState.CANCELED,
            "b": OrderState.CANCELED,
            "c": OrderState.FILLED,
        }
        assert (simulator.bulk_requests, sum(simulator.requests.values())) == (1, 0)
