"""Words that refuse a cancel never read as success (VENUES.md, general rules; issue 13).

A message decides an outcome only when it states the order's own state. One that says the
cancel could not be done, or speaks of the market or the system, is `rejected` with the
message recorded, whatever other words it holds; only a message about the order itself may end
`not_found`; a 2xx with an error envelope is not a success. Every phrasing below goes through
each venue's own envelopes at the statuses where the venue's words decide, and through its
bulk, sweep and order-status readers; the documented answers must still read as before. One
refusal per venue goes through its simulator over HTTP and the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Answer, FaultPlan, OrderState
from batchcancel.venues import VENUES
from batchcancel.venues.base import BulkAnswer, Reply, Venue, VerdictKind
from batchcancel.venues.tanx import TanxVenue
from batchcancel.venues.zebpay import ZebpayVenue
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.torture_support import VENUE_NAMES, build_venues, db_rows, stderr_is_clean

SUCCESSES = frozenset({Outcome.CANCELED, Outcome.CANCEL_PENDING, Outcome.ALREADY_CLOSED})

# Refusals, market or system words, and other things' states or absence: each `rejected`,
# whatever order-state words it also holds. Mixed case, codes, curly apostrophes.
REFUSALS = [
    "order could not be canceled",
    "Order cannot be cancelled",
    "order already canceled? no: could not cancel",
    "Cannot cancel: order 42 is a filled order locked by settlement",
    "Market closed",
    "The market is currently closed; order already filled?",
    "Trading halted for BTCUSDT, order already done",
    "System under maintenance, order not found",
    "Instrument suspended: order already finished",
    "Cancel failed: order already finished",
    "Can\u2019t cancel an order that is already canceled",
    "Unable to cancel order (already closed)",
    "Cancel not allowed: order already filled",
    "Not permitted to cancel this order: already done",
    "Cancel request denied, order already canceled",
    "cancellation REFUSED: order filled",
    "Cancel rejected - order already cancelled",
    "ORDER_CANNOT_BE_CANCELLED",
    "orderCannotBeCancelled",
    "Order was not canceled",
    "Account not found",
    "Market BTCUSDT does not exist",
    "Position already closed",
]


def reply(status: int, value: object, **headers: str) -> Reply:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Reply(status=status, headers=headers, body=body)


def tanx_error(message: str) -> dict[str, object]:
    return {"status": "error", "message": message, "payload": ""}


def zebpay_envelope(code: int, message: str, data: object = None) -> dict[str, object]:
    return {
        "statusDescription": message,
        "data": {} if data is None else data,
        "statusCode": code,
        "customMessage": [message],
    }


# Each venue's cancel answers that carry a message: its error statuses, and 2xx envelopes.
CANCEL_FORMS: Mapping[str, Callable[[str], list[Reply]]] = {
    "sfox": lambda m: [
        reply(400, {"error": m}),
        reply(200, {"error": m}),
        reply(200, {"message": m}),
        reply(200, {"status": "canceled", "error": m}),
    ],
    "etna": lambda m: [
        reply(409, {"Message": m}),
        reply(404, {"Message": m}),
        reply(200, {"Message": m}),
    ],
    "crux": lambda m: [
        reply(200, {"detail": m, "success": False}),
        reply(200, {"detail": m}),
        reply(200, {"message": m, "success": "false"}),
        reply(404, {"detail": m}),
        reply(400, {"detail": m}),
    ],
    "tanx": lambda m: [
        reply(400, tanx_error(m)),
        reply(404, tanx_error(m)),
        reply(200, tanx_error(m)),
        reply(200, {"status": "success", "message": m, "payload": {"id": 1}}),
        reply(200, {"status": "success", "message": m, "payload": {"id": 1, "state": "wait"}}),
    ],
    "zebpay": lambda m: [
        reply(400, zebpay_envelope(400, m)),
        reply(404, zebpay_envelope(404, m)),
        reply(200, zebpay_envelope(400, m)),
        reply(200, zebpay_envelope(200, m, {"clientOrderId": "c1", "status": "canceled"})),
    ],
}
# Order-status answers (the confirm pass) that carry a message.
STATUS_FORMS: Mapping[str, Callable[[str], list[Reply]]] = {
    "sfox": lambda m: [reply(400, {"error": m}), reply(200, {"error": m})],
    "etna": lambda m: [reply(404, {"Message": m})],
    "crux": lambda m: [reply(404, {"detail": m}), reply(200, {"detail": m, "success": False})],
    "tanx": lambda m: [reply(404, tanx_error(m)), reply(200, tanx_error(m))],
    "zebpay": lambda m: [reply(404, zebpay_envelope(404, m)), reply(200, zebpay_envelope(400, m))],
}


def venue(name: str) -> Venue:
    return VENUES[name]({k: v for k, v in CREDENTIALS.items() if k in VENUES[name].credential_vars})


def table(forms: Mapping[str, Callable[[str], list[Reply]]]) -> list[object]:
    return [
        pytest.param(name, message, answer, id=f"{name}-{answer.status}-{n}-{message[:24]}")
        for name, form in forms.items()
        for message in REFUSALS
        for n, answer in enumerate(form(message))
    ]


class TestRefusalsAreRejected:
    @pytest.mark.parametrize(("name", "message", "answer"), table(CANCEL_FORMS))
    def test_cancel_answer(self, name: str, message: str, answer: Reply) -> None:
        """A cancel answer whose message refuses, or speaks of the market, the system or
        another thing than the order, is `rejected` with the message in its reason."""
        verdict = venue(name).classify(answer)
        assert verdict.kind is VerdictKind.FINAL, verdict
        assert verdict.outcome is Outcome.REJECTED, verdict
        assert message.lower()[:20] in verdict.reason.lower(), verdict

    @pytest.mark.parametrize(("name", "message", "answer"), table(STATUS_FORMS))
    def test_status_answer(self, name: str, message: str, answer: Reply) -> None:
        """The confirm pass's read of the same messages: `rejected`, never a success."""
        verdict = venue(name).classify_status(answer)
        assert verdict.kind is VerdictKind.FINAL, verdict
        assert verdict.outcome is Outcome.REJECTED, verdict

    @pytest.mark.parametrize("message", REFUSALS, ids=[m[:24] for m in REFUSALS])
    def test_sfox_bulk_answer(self, message: str) -> None:
        """An sFOX bulk answer that refuses accounts for no order: each is cancelled alone."""
        sfox = venue("sfox")
        assert hasattr(sfox, "classify_bulk")
        for answer in (
            reply(200, {"error": message}),
            reply(400, {"error": message}),
            reply(200, {"orders": [{"id": 1, "status": "Canceled"}], "error": message}),
        ):
            assert_no_success(sfox.classify_bulk(answer))

    @pytest.mark.parametrize("message", REFUSALS, ids=[m[:24] for m in REFUSALS])
    def test_sweep_answers(self, message: str) -> None:
        """A cancel-all answer that refuses, or is an error envelope, accounts for no order."""
        tanx = TanxVenue(CREDENTIALS)
        listed = [{"id": 1, "state": "cancel", "market": "btcusdt"}]
        for answer in (
            reply(200, {"status": "success", "message": message, "payload": listed}),
            reply(200, {"status": "error", "message": message, "payload": listed}),
        ):
            assert_no_success(tanx.classify_sweep(answer))
        zebpay = ZebpayVenue(CREDENTIALS)
        data = [{"clientOrderId": "c1", "status": "canceled", "symbol": "BTCUSDT"}]
        for answer in (
            reply(200, zebpay_envelope(200, message, data)),
            reply(200, zebpay_envelope(400, message, data)),
        ):
            assert_no_success(zebpay.classify_sweep(answer))


def assert_no_success(answer: BulkAnswer) -> None:
    """Nothing in the answer is a success; every order is left to a cancel of its own."""
    assert answer.whole is None or answer.whole.outcome not in SUCCESSES, answer
    assert answer.per_order == {}, answer


# VENUES.md's own answers, which must still read as they did.
POSITIVES = [
    ("sfox", reply(200, {"status": "canceled"}), Outcome.CANCELED),
    ("sfox", reply(200, {"status": "cancel pending"}), Outcome.CANCEL_PENDING),
    ("sfox", reply(200, {"status": "order already finished"}), Outcome.ALREADY_CLOSED),
    ("sfox", reply(400, {"error": "internal error"}), Outcome.NOT_FOUND),
    ("sfox", reply(400, {"error": "order_id does not exist in your account"}), Outcome.NOT_FOUND),
    ("sfox", reply(400, {"error": "the order is already done/canceled"}), Outcome.ALREADY_CLOSED),
    ("sfox", reply(400, {"error": "Order already canceled"}), Outcome.ALREADY_CLOSED),
    ("etna", reply(204, b""), Outcome.CANCELED),
    ("etna", reply(200, {"Id": 1, "Status": "Canceled"}), Outcome.CANCELED),
    ("etna", reply(200, {"Id": 1, "Status": "PendingCancel"}), Outcome.CANCEL_PENDING),
    (
        "etna",
        reply(409, {"Message": "Only outstanding orders can be cancelled."}),
        Outcome.ALREADY_CLOSED,
    ),
    ("etna", reply(409, b""), Outcome.ALREADY_CLOSED),
    ("etna", reply(404, {"Message": "Order not found."}), Outcome.NOT_FOUND),
    ("etna", reply(404, b""), Outcome.NOT_FOUND),
    ("crux", reply(204, b""), Outcome.CANCEL_PENDING),
    ("crux", reply(200, b""), Outcome.CANCEL_PENDING),
    ("crux", reply(200, {"order_uuid": "x"}), Outcome.CANCEL_PENDING),
    ("crux", reply(200, {"success": True, "detail": "sent to supplier"}), Outcome.CANCEL_PENDING),
    ("crux", reply(404, {"detail": "Not found."}), Outcome.NOT_FOUND),
    ("crux", reply(404, b""), Outcome.NOT_FOUND),
    (
        "tanx",
        reply(
            200,
            {
                "status": "success",
                "message": "Order is successfully queued for cancellation",
                "payload": {"id": 1, "state": "wait"},
            },
        ),
        Outcome.CANCEL_PENDING,
    ),
    (
        "tanx",
        reply(200, {"status": "success", "message": "Cancelled Order Successfully"}),
        Outcome.CANCELED,
    ),
    ("tanx", reply(400, tanx_error("Order not found")), Outcome.NOT_FOUND),
    ("tanx", reply(200, tanx_error("Order not found")), Outcome.NOT_FOUND),
    ("tanx", reply(400, tanx_error("Order already cancelled or filled")), Outcome.ALREADY_CLOSED),
    ("tanx", reply(400, tanx_error("Order is Filled")), Outcome.ALREADY_CLOSED),
    (
        "zebpay",
        reply(200, zebpay_envelope(200, "OK", {"clientOrderId": "c1", "status": "canceled"})),
        Outcome.CANCELED,
    ),
    ("zebpay", reply(404, zebpay_envelope(404, "Order not found")), Outcome.NOT_FOUND),
    ("zebpay", reply(200, zebpay_envelope(404, "Order not found")), Outcome.NOT_FOUND),
    (
        "zebpay",
        reply(400, zebpay_envelope(400, "Order already canceled or filled")),
        Outcome.ALREADY_CLOSED,
    ),
    ("zebpay", reply(400, zebpay_envelope(400, "Order is closed")), Outcome.ALREADY_CLOSED),
    ("zebpay", reply(400, zebpay_envelope(400, "clientOrderId not found")), Outcome.NOT_FOUND),
]


class TestOrderStatesStillRead:
    @pytest.mark.parametrize(
        ("name", "answer", "outcome"),
        [pytest.param(*case, id=f"{case[0]}-{n}") for n, case in enumerate(POSITIVES)],
    )
    def test_documented_answers(self, name: str, answer: Reply, outcome: Outcome) -> None:
        """Messages that state the order's own state keep their outcome."""
        verdict = venue(name).classify(answer)
        assert verdict.kind is VerdictKind.FINAL, verdict
        assert verdict.outcome is outcome, verdict


# One refusal per venue, as the audit found them, answered by the simulator over HTTP.
CLI_REFUSALS: Mapping[str, tuple[Answer, str]] = {
    "sfox": (Answer.json(400, {"error": "order could not be canceled"}), "could not be canceled"),
    "etna": (
        Answer.json(409, {"Message": "Order cannot be cancelled: market closed"}),
        "cannot be cancelled",
    ),
    "crux": (
        Answer.json(200, {"detail": "order cannot be cancelled", "success": False}),
        "cannot be cancelled",
    ),
    "tanx": (
        Answer.json(400, tanx_error("Cannot cancel: filled order locked")),
        "filled order locked",
    ),
    "zebpay": (Answer.json(400, zebpay_envelope(400, "Market closed")), "market closed"),
}


class TestThroughTheCli:
    async def test_refusals_end_rejected_and_the_run_needs_attention(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """Five venues, two open orders each; each venue refuses the first in words that also
        name a closed or cancelled order. That order is `rejected` with the venue's words as
        its reason, sent once and never retried; the other is cancelled as usual; exit 1."""
        plans = {name: FaultPlan() for name in VENUE_NAMES}
        venues = build_venues(dict.fromkeys(VENUE_NAMES, 2), faults=plans)
        for name, (answer, _) in CLI_REFUSALS.items():
            plans[name].script(venues.ids(name)[0], answer)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = f"sqlite:///{tmp_path / 'audit.db'}"
        keys = {"rate_limit": 0, "timeout": 5.0, "backoff": 0.05}
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, **{name: keys for name in VENUE_NAMES}
            )
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        stderr_is_clean(result.stderr)
        assert result.code == 1, (result.stdout, result.stderr)
        assert json.loads(result.stdout)["status"] == "attention"
        rows = {
            (str(v), str(o)): (str(outcome), str(reason))
            for v, o, outcome, reason in db_rows(
                db, "select venue, order_id, outcome, reason from orders"
            )
        }
        for name, (_, words) in CLI_REFUSALS.items():
            refused, other = venues.ids(name)
            simulator = venues.simulators[name]
            outcome, reason = rows[name, refused]
            assert outcome == "rejected", (name, outcome, reason)
            assert words in reason.lower(), (name, reason)
            assert simulator.requests[refused] == 1, name
            assert simulator.book[refused] is OrderState.OPEN, name  # the venue did nothing
            assert rows[name, other][0] == simulator.expected_outcomes[OrderState.OPEN], name
