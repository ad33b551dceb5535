"""`batchcancel demo --kill`: the kill switch from the venues' own books, on loopback.

Each of the five simulators holds a book of working orders that no input lists (ETNA's in
two accounts, ZebPay's in two symbols, some of Crux's waiting on their supplier), and a
runaway keeps placing orders at sFOX for the kill's first seconds. The kill lists every book,
cancels what it finds, lists again until each is flat, and the demo checks each simulator's
book against that: nothing working is left anywhere.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from batchcancel.audit.store import AuditStore
from batchcancel.config import load_settings
from batchcancel.drain_types import BooksScope, DrainOptions
from batchcancel.planning import KILL_DEADLINE, KILL_MAX_ATTEMPTS, Plan, kill_profile
from batchcancel.session import ViewCallback, start_run
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.simulators.book import Runaway
from batchcancel.simulators.server import serve_in_thread
from batchcancel.sources import no_input
from batchcancel.summary import Summary
from batchcancel.venues import VENUES

__all__ = ["KILL_BOOKS", "KillDemoResult", "run_kill_demo"]

# Working orders per venue, at demo-sized limits (requests per second).
KILL_BOOKS: Final[Mapping[str, tuple[int, int]]] = {
    "sfox": (150, 250),
    "etna": (120, 120),
    "crux": (60, 60),
    "tanx": (100, 100),
    "zebpay": (100, 100),
}
ETNA_ACCOUNTS: Final = ("4001", "4002")
ZEBPAY_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT")
# At sFOX, from the kill's first request: done well before the other books can be flat
# (each needs at least a second at its limit), so the kill is still live to catch it all.
RUNAWAY: Final = Runaway(count=40, seconds=1.0)


@dataclass(frozen=True, slots=True)
class KillDemoResult:
    """What the kill did, and what is still working at each simulator (nothing, if flat)."""

    summary: Summary
    db_url: str
    still_working: dict[str, int]
    runaway_placed: int


def _book(venue: str, simulator: Simulator, count: int) -> None:
    for n in range(count):
        if venue == "crux":
            state = OrderState.OPEN_ASYNC if n % 4 == 0 else OrderState.OPEN
            simulator.place(str(uuid.uuid4()), state)
        elif venue == "etna":
            simulator.place(account_id=ETNA_ACCOUNTS[n % 2], side="buy" if n % 3 else "sell")
        elif venue == "zebpay":
            simulator.place(f"runaway-{n:05d}", symbol=ZEBPAY_SYMBOLS[n % 2], side="buy")
        else:
            simulator.place(symbol="BTC-USD", side="buy" if n % 2 else "sell")


def run_kill_demo(
    out_dir: Path,
    *,
    views: ViewCallback | None = None,
    on_planned: Callable[[str, Plan], None] | None = None,
    books: Mapping[str, tuple[int, int]] = KILL_BOOKS,
    runaway: Runaway | None = RUNAWAY,
) -> KillDemoResult:
    """Run the kill demo into `out_dir`; the caller prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    credentials = {
        var: f"demo-{secrets.token_hex(12)}"
        for venue in VENUES.values()
        for var in venue.credential_vars
    }
    simulators: dict[str, Simulator] = {}
    for venue, (count, rate) in books.items():
        simulator = SIMULATORS[venue](
            credentials=credentials,
            rate_limit=rate,
            period=1.0,
            penalty=1.0,
            runaway=runaway if venue == "sfox" else None,
        )
        _book(venue, simulator, count)
        simulators[venue] = simulator
    db_url = f"sqlite:///{out_dir / 'audit.db'}"
    with serve_in_thread(simulators) as server:
        overrides: dict[str, dict[str, object]] = {
            venue: {
                "base_url": server.url(venue),
                "rate_limit": rate,
                "period": 1.0,
                "cooldown": 1.0,
                "backoff": 0.1,
            }
            for venue, (_, rate) in books.items()
        }
        overrides.setdefault("etna", {})["accounts"] = list(ETNA_ACCOUNTS)
        overrides.setdefault("zebpay", {})["symbols"] = list(ZEBPAY_SYMBOLS)
        settings = kill_profile(load_settings(credentials, db_url=db_url, overrides=overrides))
        store = AuditStore(db_url, redact=settings.secrets)
        venues = sorted(books)
        try:
            summary = start_run(
                store,
                settings,
                no_input(f"the books of {', '.join(venues)}"),
                command="kill",
                run_key=None,
                only_venue=None,
                options={"demo": True, "from_venues": venues, "account": [], "symbol": []},
                reason="batchcancel demo --kill: a runaway algorithm, from the venues' books",
                command_line="batchcancel demo --kill",
                dry_run=False,
                drain_options=DrainOptions(
                    max_attempts=KILL_MAX_ATTEMPTS,
                    deadline=KILL_DEADLINE,
                    claim_all=True,
                    bulk=True,
                    books=BooksScope(frozenset(venues)),
                    kill=True,
                ),
                views=views,
                on_planned=on_planned,
            )
        finally:
            store.close()
    still = {name: len(sim.working_keys()) for name, sim in simulators.items()}
    placed = len(simulators["sfox"].runaway_placed) if "sfox" in simulators else 0
    return KillDemoResult(summary, db_url, still, placed)
