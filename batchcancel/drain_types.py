"""What a drain is told (DrainOptions) and what it shows (LaneView): plain data.

Kept apart from the engine so the CLI can build options and say what it is about to cancel
before aiohttp is imported (about 0.1 s of a kill's first second).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DrainOptions", "LaneView"]


@dataclass(frozen=True, slots=True)
class DrainOptions:
    """How one session drains a run."""

    max_attempts: int = 5
    deadline: float | None = None  # seconds from start
    confirm: bool = False  # poll order status of cancel_pending orders instead of cancelling
    bulk: bool = False  # use the venue's bulk-cancel endpoint for fresh orders where it has one
    # --all-open: first cancel every open order of the account with the venue's cancel-all
    # endpoint (ZebPay, tanX), listed in the input or not; the operator must ask for it.
    all_open: bool = False
    poll_every: float = 1.0  # first delay between status polls of one order (doubles, max 5 s)
    handle_signals: bool = True
    lease: float = 30.0  # seconds a worker holds a venue lane without renewing it
    claim_all: bool = False  # take every free lane at once (kill), not one at a time
    seed: int | None = None  # for reproducible jitter in tests


@dataclass
class LaneView:
    """What the progress display shows of one venue."""

    venue: str
    total: int
    done: int = 0
    sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    paused_until: float = 0.0  # time.monotonic()
    halted: str = ""  # why the lane stopped early, if it did
    started: float = field(default_factory=time.monotonic)
