"""The gather peer as a process (figure 5c): `python -m benchmarks.gather_peer ORDERS.csv VENUES.json`.

What a desk's hand-written script does: read the CSV with the csv module, then
`asyncio.gather` one cancel per row, each venue paced by an asyncio-throttle Throttler, on a
default aiohttp session. No audit, no validation, no de-duplication; a 429 is retried after its
Retry-After (or 1 s), at most MAX_ATTEMPTS times. VENUES.json maps each venue to
[base_url, rate_limit, period] (rate_limit 0: unthrottled); credentials come from the same
environment variables batchcancel reads. It imports nothing of batchcancel, so its start-up
is Python's, aiohttp's and asyncio-throttle's.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 5


def peer_command(
    source: Path, venues: Mapping[str, tuple[str, int, float]], work: Path
) -> list[str]:
    """The command line that runs this peer on `source` against `venues`."""
    config = work / "gather-peer-venues.json"
    config.write_text(json.dumps({v: list(spec) for v, spec in venues.items()}), encoding="utf-8")
    return [sys.executable, "-m", "benchmarks.gather_peer", str(source), str(config)]


def request(venue: str, base: str, row: Mapping[str, str]) -> tuple[str, str, dict[str, str], Any]:
    """(method, url, headers, JSON body or None) of one cancel, as VENUES.md describes it."""
    env = os.environ
    order_id = row["order_id"]
    if venue == "sfox":
        auth = {"Authorization": f"Bearer {env['BATCHCANCEL_SFOX_API_KEY']}"}
        return "DELETE", f"{base}/v1/orders/{order_id}", auth, None
    if venue == "etna":
        headers = {
            "Et-App-Key": env["BATCHCANCEL_ETNA_APP_KEY"],
            "Authorization": f"Bearer {env['BATCHCANCEL_ETNA_TOKEN']}",
        }
        return (
            "DELETE",
            f"{base}/v1.0/accounts/{row['account_id']}/orders/{order_id}",
            headers,
            None,
        )
    if venue == "crux":
        auth = {"Authorization": f"Token {env['BATCHCANCEL_CRUX_TOKEN']}"}
        return "PATCH", f"{base}/orders/cancel/", auth, {"order_uuid": order_id}
    if venue == "tanx":
        auth = {"Authorization": f"JWT {env['BATCHCANCEL_TANX_JWT']}"}
        return "POST", f"{base}/sapi/v1/orders/cancel/", auth, {"order_id": int(order_id)}
    if venue == "zebpay":
        auth = {"Authorization": f"Bearer {env['BATCHCANCEL_ZEBPAY_JWT']}"}
        body = {"clientOrderId": order_id, "symbol": row.get("symbol") or "BTCUSDT"}
        return "DELETE", f"{base}/api/v1/trade/order", auth, body
    raise ValueError(f"unknown venue {venue!r}")


async def cancel_all(rows: list[dict[str, str]], venues: Mapping[str, list[Any]]) -> None:
    """Every row at once, each venue through its own Throttler."""
    import aiohttp
    from asyncio_throttle.throttler import Throttler

    throttlers = {
        venue: Throttler(rate_limit=int(limit) or len(rows), period=float(period))
        for venue, (_, limit, period) in venues.items()
    }
    async with aiohttp.ClientSession() as session:

        async def cancel(row: dict[str, str]) -> None:
            venue = row["venue"]
            method, url, headers, body = request(venue, venues[venue][0], row)
            for _ in range(MAX_ATTEMPTS):
                async with (
                    throttlers[venue],
                    session.request(method, url, headers=headers, json=body) as response,
                ):
                    await response.read()
                if response.status != 429:
                    return
                try:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                except ValueError:
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(cancel(row) for row in rows), return_exceptions=True)


def main(source: str, config: str) -> None:
    venues = json.loads(Path(config).read_text(encoding="utf-8"))
    with open(source, newline="", encoding="utf-8") as handle:
        rows = [
            {key.strip().lower(): (value or "").strip() for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]
    asyncio.run(cancel_all([row for row in rows if row.get("venue") in venues], venues))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
