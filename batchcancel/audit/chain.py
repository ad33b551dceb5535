"""The hash chain over a run's recorded facts: their canonical form, the links, the digest.

Every write of the audit store also appends, in the same transaction and as its last
statement, one link to a chain of its own: the facts it recorded (canonical JSON), the hash of
the previous link and its own. Each writer of a run (the hot path, the loader, the control
writes of each process) keeps its own chain, so no global lock sits on the hot path; the
run's digest is the hash of every chain's head. Links are numbered by the database as they
are inserted, after the rows they describe, so two transactions that touch the same row are
numbered in the order they changed it: `verify` replays the facts in that order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.db import Database
from batchcancel.audit.records import utcnow
from batchcancel.audit.tables import Run

__all__ = [
    "GENESIS",
    "Chain",
    "ChainHead",
    "Chains",
    "Sealed",
    "canonical",
    "facts_hash",
    "link_hash",
    "micros",
    "run_digest",
    "stamp",
]

GENESIS: Final = "0" * 64  # the `prev` of a chain's first link
_INSERT_LINK: Final = (
    "INSERT INTO chain_links (run_id, chain_id, seq, prev, hash, facts, created_at) "
    "VALUES (:run_id, :chain_id, :seq, :prev, :hash, :facts, :created_at)"
)

Fact = dict[str, Any]


def canonical(value: object) -> bytes:
    """RFC 8785 (JCS) bytes of a fact. Facts hold only strings, integers, booleans, null,
    lists and objects with ASCII keys, for which sorted compact JSON without ASCII escaping
    is byte for byte JCS (tests/test_chain.py checks it against the rfc8785 library, which
    `verify` uses); it is six times faster than that library, and this is the hot path."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def stamp(value: datetime | None) -> str | None:
    """A timestamp as facts hold it: naive UTC, ISO 8601 with microseconds."""
    return None if value is None else value.isoformat(sep=" ", timespec="microseconds")


def micros(latency_ms: float | None) -> int | None:
    """A stored latency (ms, 3 decimals) as facts hold it: whole microseconds, no float."""
    return None if latency_ms is None else round(latency_ms * 1000)


def facts_hash(facts_bytes: bytes) -> str:
    return hashlib.sha256(facts_bytes).hexdigest()


def link_hash(run_id: str, chain_id: str, seq: int, prev: str, facts_bytes: bytes) -> str:
    """A link's hash: covers its place (run, chain, number), the previous link and its facts."""
    return hashlib.sha256(
        canonical([run_id, chain_id, seq, prev, facts_hash(facts_bytes)])
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: its last link's number and hash."""

    chain_id: str
    seq: int
    hash: str


def run_digest(heads: Iterable[ChainHead]) -> str:
    """The run's digest: one hash over every chain's head, in chain order."""
    ordered = sorted((h.chain_id, h.seq, h.hash) for h in heads)
    return hashlib.sha256(canonical([list(h) for h in ordered])).hexdigest()


@dataclass
class _Pending:
    """A link written in a transaction not yet committed."""

    chain: Chain
    seq: int = 0
    hash: str = ""
    written: bool = False

    def append(self, conn: sa.Connection, facts: Sequence[Mapping[str, Any]], at: Any) -> None:
        """Write the link of these facts: call it last in the transaction."""
        if not facts:
            return
        chain = self.chain
        facts_bytes = canonical(list(facts))
        self.seq = chain.seq + 1
        self.hash = link_hash(chain.run_id, chain.chain_id, self.seq, chain.head, facts_bytes)
        conn.exec_driver_sql(
            chain.paramstyle(_INSERT_LINK),
            {
                "run_id": chain.run_id,
                "chain_id": chain.chain_id,
                "seq": self.seq,
                "prev": chain.head,
                "hash": self.hash,
                "facts": facts_bytes.decode(),
                "created_at": at,
            },
        )
        self.written = True


@dataclass
class Chain:
    """One writer's chain in one run (in memory: its head; in the database: its links)."""

    run_id: str
    chain_id: str
    paramstyle: Any  # the store's statement translator (named -> driver style)
    seq: int = 0
    head: str = GENESIS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextlib.contextmanager
    def hold(self) -> Iterator[_Pending]:
        """Around a write transaction: `pending.append(...)` inside it, and the chain moves
        on only if the block ends without error (the transaction committed)."""
        with self._lock:
            pending = _Pending(self)
            yield pending
            if pending.written:
                self.seq, self.head = pending.seq, pending.hash

    def as_head(self) -> ChainHead:
        return ChainHead(self.chain_id, self.seq, self.head)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A run's digest as its latest session sealed it, with the Ed25519 signature if any."""

    digest: str | None
    signature: str | None
    public_key: str | None


_runs: Final = cast(sa.Table, Run.__table__)
_HEADS: Final = (
    "SELECT c.chain_id, c.seq, c.hash FROM chain_links c JOIN ("
    "SELECT chain_id, MAX(seq) AS seq FROM chain_links WHERE run_id = :run "
    "GROUP BY chain_id) m ON m.chain_id = c.chain_id AND m.seq = c.seq WHERE c.run_id = :run"
)


class Chains:
    """This process's chains (one per run and writer: the hot path, the loader, the rest),
    the transactions that append to them, and the run digest they give."""

    def __init__(self, db: Database, *, token: str) -> None:
        self._db = db
        self._prefix = hashlib.sha256(token.encode()).hexdigest()[:16]
        self._chains: dict[tuple[str, str], Chain] = {}
        self._lock = threading.Lock()

    def _chain(self, run_id: str, role: str) -> Chain:
        with self._lock:
            chain = self._chains.get((run_id, role))
            if chain is None:
                chain = Chain(run_id, f"{self._prefix}/{role}", self._db.sql)
                self._chains[run_id, role] = chain
            return chain

    @contextlib.contextmanager
    def recorded(
        self, run_id: str, role: str = "control"
    ) -> Iterator[tuple[sa.Connection, list[Fact]]]:
        """A write transaction whose facts (the caller appends them) become, as its last
        statement, the next link of this writer's chain; the chain moves on only once the
        transaction has committed."""
        chain = self._chain(run_id, role)
        with chain.hold() as link, self._db.write() as conn:
            facts: list[Fact] = []
            yield conn, facts
            link.append(conn, facts, self._db.stamp(utcnow()))

    def digest(self, run_id: str) -> str:
        """The run's digest as the database holds it now (every worker's chains)."""
        with self._db.read() as conn:
            rows = conn.execute(sa.text(_HEADS), {"run": run_id}).all()
        return run_digest(ChainHead(chain_id, int(seq), h) for chain_id, seq, h in rows)

    def seal(self, run_id: str, signing_key: Any = None) -> str:
        """Record the digest as it stands on the run, signed if a key is configured."""
        digest = self.digest(run_id)
        signature = public_key = None
        if signing_key is not None:
            from batchcancel.audit.signing import public_hex, sign

            signature, public_key = sign(signing_key, digest), public_hex(signing_key)
        with self._db.write() as conn:
            conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id)
                .values(digest=digest, signature=signature, public_key=public_key)
            )
        return digest

    def sealed(self, run_id: str) -> Sealed:
        """The digest recorded at the end of the run's latest session, and its signature."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(_runs.c.digest, _runs.c.signature, _runs.c.public_key).where(
                    _runs.c.id == run_id
                )
            ).one()
        return Sealed(row.digest, row.signature, row.public_key)
