"""The async run: one lane per venue, write-ahead audit, retries, stops.

Each lane streams its venue's unsent orders from the audit store in pages (never a task per
order), paces them through its Pacer, and sends each one only after its attempt row is
committed. Transient answers are retried with exponential backoff and jitter, honouring
Retry-After; a 429 pauses the whole venue; an auth refusal halts the venue and leaves its
remaining orders `skipped`. A stop (deadline, SIGINT/SIGTERM) halts every lane: in-flight
requests finish or time out and are recorded, the rest is left resumable.

Modules: session (claims, leases, loader, heartbeat), stops (signals and deadline), work (the
work queue), policy (pure decisions), core (a lane's shared state), exchange (one request),
lane / confirm (the two kinds of lane), bulk and sweep (bulk requests and cancel-all).
aiohttp is imported only when a lane opens the default transport.
"""

from __future__ import annotations

from batchcancel.drain_types import DrainOptions, DrainResult, LaneView
from batchcancel.engine.session import drain
from batchcancel.engine.sweep import SWEEP_BODY_LIMIT

__all__ = ["SWEEP_BODY_LIMIT", "DrainOptions", "DrainResult", "LaneView", "drain"]
