"""The audit schema: runs, orders (one row each, current state) and attempts (one row each).

Alembic migrations in batchcancel/migrations/ create these tables; nothing calls create_all outside tests
of the migrations themselves. Times are naive UTC with microseconds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Attempt",
    "Base",
    "Book",
    "ChainLink",
    "Lane",
    "Order",
    "Request",
    "Run",
    "Session",
    "metadata",
]

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the audit tables."""


class Run(Base):
    """One run: who started it, why, with what, and where it stands."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    command: Mapped[str] = mapped_column(String(16))  # run / kill
    status: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[str] = mapped_column(Text, default="{}")  # JSON, never credentials
    reason: Mapped[str] = mapped_column(Text, default="")
    os_user: Mapped[str] = mapped_column(String(128), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    command_line: Mapped[str] = mapped_column(Text, default="")  # secrets left out
    version: Mapped[str] = mapped_column(String(32), default="")
    orders_total: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)  # latest session's start
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)  # latest session's end
    sessions: Mapped[int] = mapped_column(Integer, default=0)  # run + resumes
    lock_owner: Mapped[str | None] = mapped_column(String(255))
    lock_heartbeat: Mapped[datetime | None] = mapped_column(DateTime)
    # The host's clock evidence at the start (JSON: sync state as the OS says, wall/monotonic).
    clock: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # The digest of the run's chains when its latest session ended, and its Ed25519 signature.
    digest: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(128))
    public_key: Mapped[str | None] = mapped_column(String(64))


class Session(Base):
    """One process's turn at a run: the first `run`, then each `resume`. Who, where, why."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    command: Mapped[str] = mapped_column(String(16))  # run / resume / kill
    os_user: Mapped[str] = mapped_column(String(128), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    command_line: Mapped[str] = mapped_column(Text, default="")  # secrets left out
    version: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")


class Order(Base):
    """One order of a run, with its current state and, once it has one, its outcome."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_run_venue_pk", "run_id", "venue", "pk"),
        Index("ix_orders_run_outcome", "run_id", "outcome", "venue", "pk"),  # migration 0007
        Index("ix_orders_run_state", "run_id", "state", "venue", "pk"),
    )

    pk: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int] = mapped_column(Integer)  # 1-based data row of the source
    venue: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(Text, default="")
    symbol: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(12))  # pending / sending / done
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    first_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_answer_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The list request (requests.pk) that first showed the order working at its venue
    # (`--from-venues`); NULL for an order only the input named.
    listed_by: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Base):
    """One request sent for an order. Written before it leaves; its answer filled in after."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_run_verdict", "run_id", "verdict"),)  # 0007

    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.pk"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40))
    worker: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(8), default="cancel", server_default="cancel")
    sent_at: Mapped[datetime] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    verdict: Mapped[str | None] = mapped_column(String(16))  # NULL until answered
    latency_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")


class Lane(Base):
    """A venue of a run, leased to the one worker that sends to it (rate limit, claims)."""

    __tablename__ = "lanes"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    venue: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    # Fencing: raised on every takeover; a write-ahead record commits only while it is ours.
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The holder's request timeout: a new holder waits it out before re-sending in-flight work.
    request_timeout: Mapped[float | None] = mapped_column(Float)


class Request(Base):
    """A request that carries no order of its own (a cancel-all page or its retry), written
    before it leaves like every attempt; its answer filled in after."""

    __tablename__ = "requests"
    __table_args__ = (Index("ix_requests_run_venue", "run_id", "venue"),)

    pk: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    venue: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))  # sweep / list
    target: Mapped[str] = mapped_column(Text, default="", server_default="")
    worker: Mapped[str] = mapped_column(String(255), default="", server_default="")
    sent_at: Mapped[datetime] = mapped_column(DateTime)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    verdict: Mapped[str | None] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")


class Book(Base):
    """A venue's own book in a `--from-venues` run: what its listings found and the verdict
    (flat / draining / not_flat) its last session reached. A resume lists again and
    rewrites it."""

    __tablename__ = "books"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    venue: Mapped[str] = mapped_column(String(32), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(12))
    listed: Mapped[int] = mapped_column(Integer, default=0)  # working orders the lists showed
    from_input: Mapped[int] = mapped_column(Integer, default=0)  # of those, also in the input
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    working_at_end: Mapped[int] = mapped_column(Integer, default=0)
    lists: Mapped[int] = mapped_column(Integer, default=0)  # list requests sent
    started_at: Mapped[datetime] = mapped_column(DateTime)
    first_request_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_answer_at: Mapped[datetime | None] = mapped_column(DateTime)
    flat_at: Mapped[datetime | None] = mapped_column(DateTime)
    seconds_to_flat: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")  # why it is not flat


class ChainLink(Base):
    """One link of a hash chain over the run's facts (batchcancel/audit/chain.py): appended
    as the last statement of the write it describes, so `pk` orders the writes."""

    __tablename__ = "chain_links"
    __table_args__ = (Index("ix_chain_links_run", "run_id", "pk"),)

    pk: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    chain_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    facts: Mapped[str] = mapped_column(Text)  # canonical JSON (RFC 8785) array of facts
    created_at: Mapped[datetime] = mapped_column(DateTime)


metadata = Base.metadata
