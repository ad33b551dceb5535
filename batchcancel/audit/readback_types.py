"""The values the evidence reads return (audit/readback.py): a run's header and sessions,
per-venue figures, request events, orders that need a human, metric counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "AttentionOrder",
    "MetricCounts",
    "RequestEvent",
    "RunHeader",
    "SessionInfo",
    "VenueStats",
]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One process's turn at a run."""

    command: str
    os_user: str
    host: str
    pid: int
    command_line: str
    version: str
    started_at: datetime
    finished_at: datetime | None
    status: str


@dataclass(frozen=True, slots=True)
class RunHeader:
    """Who started a run, where, when, why and with what; and each session."""

    id: str
    run_key: str | None
    command: str
    status: str
    dry_run: bool
    source: str
    options: str
    reason: str
    os_user: str
    host: str
    pid: int
    command_line: str
    version: str
    orders_total: int
    duplicates: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sessions: list[SessionInfo]

    @property
    def working_seconds(self) -> float:
        """The time the run's sessions worked, together (a resume days later adds its own
        minutes, not the days between)."""
        total = 0.0
        for session in self.sessions:
            end = session.finished_at or session.started_at
            total += max(0.0, (end - session.started_at).total_seconds())
        return total


@dataclass
class VenueStats:
    """One venue of a run, as the report's venue table shows it."""

    venue: str
    orders: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)  # by kind
    rate_limited: int = 0
    first_sent_at: datetime | None = None
    last_answer_at: datetime | None = None

    @property
    def request_total(self) -> int:
        """Every request the venue was sent."""
        return sum(self.requests.values())

    @property
    def unfinished(self) -> int:
        """Orders without an outcome."""
        return self.orders - sum(self.outcomes.values())


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request sent to a venue: an attempt of an order, or an order-less request."""

    venue: str
    kind: str
    sent_at: datetime
    answered_at: datetime | None
    http_status: int | None
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class AttentionOrder:
    """An order a human has to look at."""

    venue: str
    order_id: str
    account_id: str
    symbol: str
    outcome: str  # an outcome, FILLED_BEFORE_CANCEL or NO_OUTCOME
    reason: str
    attempts: int
    last_http_status: int | None
    last_answer_at: datetime | None


@dataclass(frozen=True, slots=True)
class MetricCounts:
    """What the metrics say of a run: orders by venue and outcome, requests by venue and
    kind, 429 answers by venue. Every venue of the run is present."""

    orders: dict[str, dict[str, int]]
    requests: dict[str, dict[str, int]]
    rate_limited: dict[str, int]
