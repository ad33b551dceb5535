"""`batchcancel simulate`: serve the five venue simulators until SIGINT or SIGTERM.

It makes throwaway credentials, seeds the books from an order list, and says (through the
callables the CLI gives) the venues config and the `export` lines that reach them.
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Callable

from batchcancel.config import is_loopback
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.server import serve_in_thread
from batchcancel.sources import read_csv
from batchcancel.venues import VENUES

__all__ = ["serve_simulators"]


def serve_simulators(
    host: str,
    port: int,
    orders_file: str | None,
    *,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> None:
    """Serve until stopped: the config and credentials go to `out`, the banner to `err`."""
    credentials = {
        var: f"sim-{secrets.token_hex(8)}"
        for venue in VENUES.values()
        for var in venue.credential_vars
    }
    simulators = {name: cls(credentials=credentials) for name, cls in SIMULATORS.items()}
    if orders_file:
        table = read_csv(orders_file, venue=None)
        for chunk in table.chunks():
            for numbered in chunk:
                if numbered.row.venue in simulators:
                    simulators[numbered.row.venue].seed({numbered.row.order_id: OrderState.OPEN})
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve_in_thread(simulators, host=host, port=port) as server:
        out("# venues config (save as venues.toml, pass --venues-config venues.toml):")
        for name, simulator in simulators.items():
            limit = simulator.rate_limit or 0
            out(f'[venues.{name}]\nbase_url = "{server.url(name)}"')
            if not is_loopback(server.host):  # SPEC: plain http elsewhere must be asked for
                out("allow_insecure = true")
            out(f"rate_limit = {limit}\nperiod = {simulator.period:g}\n")
        out("# simulator credentials (these simulators only):")
        for var, value in credentials.items():
            out(f"export {var}={value}")
        seeded = sum(len(s.book) for s in simulators.values())
        err(
            f"# serving on http://{server.host}:{server.port} with {seeded} open orders; "
            "Ctrl-C stops"
        )
        stop.wait()
