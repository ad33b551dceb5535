"""A cancel-all answer too large to parse is not read whole, and never sent again for it.

ZebPay's cancel-all lists every order it cancelled. Its answer used to be read up to 256 MB
and parsed whole (about 1.2 GB of memory); now one over engine.SWEEP_BODY_LIMIT is not
parsed: the orders it would have listed are cancelled one by one, which finds them closed.
"""

from __future__ import annotations

import json
from pathlib import Path

from batchcancel.engine import SWEEP_BODY_LIMIT
from batchcancel.simulators.base import Answer, FaultPlan, OrderState
from batchcancel.simulators.zebpay import ZebpaySimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


def huge_cancel_all_answer(listed: list[str]) -> bytes:
    """A well-formed ZebPay cancel-all answer listing `listed` and enough other orders to go
    past the limit."""
    filler = SWEEP_BODY_LIMIT // 70 + 1000  # each entry is about 70 bytes
    data = [{"clientOrderId": key, "status": "canceled", "symbol": "BTCUSDT"} for key in listed]
    data += [
        {"clientOrderId": f"other-{n:09d}", "status": "canceled", "symbol": "BTCUSDT"}
        for n in range(filler)
    ]
    envelope = {"statusDescription": "Success", "data": data, "statusCode": 200}
    body = json.dumps(envelope, separators=(",", ":")).encode()
    assert len(body) > SWEEP_BODY_LIMIT
    return body


async def test_an_oversized_cancel_all_answer_is_not_parsed_or_repeated(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    keys = [f"z-{n}" for n in range(10)]
    plan = FaultPlan(by_request={1: Answer(200, huge_cancel_all_answer(keys))})
    simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
    simulator.seed(dict.fromkeys(keys, OrderState.OPEN))
    orders = write_orders_csv(
        tmp_path / "orders.csv", [{"venue": "zebpay", "order_id": key} for key in keys]
    )
    async with serve_simulators({"zebpay": simulator}) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, zebpay={"rate_limit": 0})
        result = await run_cli(
            "kill", str(orders), "--venues-config", str(config), "--all-open", "--json",
            env=cli_env(audit_url),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["outcomes"]["canceled"] == 10  # one by one
    assert dict(simulator.requests) == dict.fromkeys(keys, 1)
    assert simulator.total_requests == 11  # one cancel-all, never repeated, then 10 singles
    assert db_rows(audit_url, "select count(*) from orders where seq = 0") == [(0,)]
    detail = db_rows(audit_url, "select detail from attempts where kind = 'bulk' limit 1")
    assert "not read" in detail[0][0]
