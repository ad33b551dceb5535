"""Lane leases: one worker per venue of a run, fenced by an epoch, expiry judged by the
database's clock, and whether the process named by a lease or lock still runs.

A lease is fenced (SPEC, "Audit and resume"): every claim raises the lane's epoch, and each
write of a lane's orders commits only while the row still names this worker at the epoch it
claimed (`fenced`, in the same transaction). Expiry is judged by the database's clock, so a
worker whose clock is wrong can neither take a live lane nor keep a dead one.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, cast

import psutil
import sqlalchemy as sa

from batchcancel.audit.db import Database
from batchcancel.audit.hotpath import FENCE
from batchcancel.audit.tables import Attempt, Lane, Order, Run, Session
from batchcancel.errors import AuditError, LaneLostError

__all__ = [
    "LOCK_STALE_AFTER",
    "Fence",
    "LaneFence",
    "Leases",
    "lock_is_stale",
    "owner_is_dead",
    "process_identity",
]

LOCK_STALE_AFTER: Final = timedelta(seconds=60)

_runs: Final = cast(sa.Table, Run.__table__)
_orders: Final = cast(sa.Table, Order.__table__)
_attempts: Final = cast(sa.Table, Attempt.__table__)
_lanes: Final = cast(sa.Table, Lane.__table__)
_sessions: Final = cast(sa.Table, Session.__table__)
# PostgreSQL: one claim of a run at a time (a transaction-level advisory lock on its id).
_CLAIM_TURN: Final = "SELECT pg_advisory_xact_lock(hashtext(%(run)s))"


@dataclass(slots=True)
class Fence:
    """This worker's hold on a lane: the epoch it claimed, and by when (time.monotonic) the
    lease the database last granted runs out, counted from before that grant was asked."""

    epoch: int
    valid_until: float
    lost: bool = False


class Leases:
    """This process's leases on the lanes of runs, and the fences that guard their writes.
    `token` is the owner this process writes into lane rows (and the run lock)."""

    def __init__(self, db: Database, *, worker: str, token: str) -> None:
        self._db = db
        self._worker = worker
        self._token = token
        self._fences: dict[tuple[str, str], Fence] = {}
        # Checked inside each write a lane's orders take (write_batch gets it from the store).
        self.fenced = LaneFence(db, token, self._fences)

    def claim_lanes(
        self,
        run_id: str,
        venues: Iterable[str],
        *,
        limit: int,
        lease: float,
        request_timeout: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Lease up to `limit` of these venues that no live worker holds: venue -> seconds to
        wait before re-sending what the previous holder left in flight (its request timeout
        when it may still be alive, else 0). `request_timeout` is ours, for the next holder.

        Every free lane at once, less a fair share for the other workers at the run that hold
        no lane yet (PostgreSQL: `idle_peers`): of n free lanes with k such workers, this one
        takes ceil(n / (k + 1)). Alone, it takes them all in one go; workers present together
        split them. A worker counted that never claims (it hangs) only slows the others down:
        each claim round takes its share of what is still free.

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent workers never wait on
        each other or take the same lane; the conditional UPDATE makes it safe on SQLite too.
        """
        wanted = sorted(set(venues))
        if not wanted or limit <= 0:
            return {}
        timeouts = request_timeout or {}
        taken: dict[str, float] = {}
        try:
            with self._db.write() as conn:
                known = set(
                    conn.execute(
                        sa.select(_lanes.c.venue).where(_lanes.c.run_id == run_id)
                    ).scalars()
                )
                missing = [v for v in wanted if v not in known]
                if missing:
                    conn.execute(_lanes.insert(), [{"run_id": run_id, "venue": v} for v in missing])
            started = time.monotonic()
            with self._db.write() as conn:
                peers = 0
                if self._db.dialect != "sqlite":  # SQLite: one process per run (its lock)
                    # Claims of a run take turns, so each one's share sees the lanes the
                    # claims before it took (the lock ends with the transaction).
                    conn.exec_driver_sql(_CLAIM_TURN, {"run": run_id})
                held: list[tuple[str, datetime | None]] = [
                    (row.owner, row.lease_until)
                    for row in conn.execute(
                        sa.select(_lanes.c.owner, _lanes.c.lease_until).where(
                            _lanes.c.run_id == run_id, _lanes.c.owner.is_not(None)
                        )
                    )
                ]
                if self._db.dialect != "sqlite":
                    peers = self.idle_peers(conn, run_id, held, lease)
                # Owners surely dead need not be waited out.
                dead = sorted({owner for owner, _ in held if owner_is_dead(owner)})
                now = self._db.now(conn)
                free = sa.or_(
                    _lanes.c.owner.is_(None),
                    _lanes.c.owner == self._token,
                    _lanes.c.lease_until < now,
                    _lanes.c.owner.in_(dead),
                )
                claimable = _lanes.c.run_id == run_id, _lanes.c.venue.in_(wanted), free
                if peers:  # this worker's part of what is free: lock only that many rows
                    n_free = conn.execute(
                        sa.select(sa.func.count()).select_from(_lanes).where(*claimable)
                    ).scalar_one()
                    limit = min(limit, -(-n_free // (peers + 1)))  # ceil
                candidates = conn.execute(
                    sa.select(
                        _lanes.c.venue, _lanes.c.owner, _lanes.c.epoch, _lanes.c.request_timeout
                    )
                    .where(*claimable)
                    .order_by(_lanes.c.venue)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
                claimed: dict[str, Fence] = {}
                for row in candidates:
                    count = conn.execute(
                        _lanes.update()
                        .where(
                            _lanes.c.run_id == run_id,
                            _lanes.c.venue == row.venue,
                            _lanes.c.epoch == row.epoch,
                            free,
                        )
                        .values(
                            owner=self._token,
                            lease_until=now + timedelta(seconds=lease),
                            epoch=row.epoch + 1,
                            request_timeout=timeouts.get(row.venue),
                        )
                    ).rowcount
                    if count != 1:
                        continue
                    claimed[row.venue] = Fence(row.epoch + 1, started + lease)
                    alive = row.owner not in (None, self._token, *dead)
                    taken[row.venue] = float(row.request_timeout or 0.0) if alive else 0.0
        except AuditError:
            return {}  # another worker inserted or took lanes at the same moment: next round
        for venue, fence in claimed.items():
            self._fences[run_id, venue] = fence
        return taken

    def idle_peers(
        self,
        conn: sa.Connection,
        run_id: str,
        held: Iterable[tuple[str, datetime | None]],
        lease: float,
    ) -> int:
        """How many other workers are at the run now holding none of its lanes: sessions still
        running, judged live (this host: the process runs and is no newer than its session;
        another host: the session began within one lease). `held` are the lane rows with an
        owner (owner, lease_until). A guess, used only to share lanes, never to fence."""
        now = self._db.now(conn)
        holding = {
            ":".join(owner.split(":")[:2])  # host:pid, as the sessions table names it
            for owner, lease_until in held
            if lease_until is not None and lease_until >= now
        }
        sessions = conn.execute(
            sa.select(_sessions.c.host, _sessions.c.pid, _sessions.c.started_at).where(
                _sessions.c.run_id == run_id,
                _sessions.c.status == "running",
                _sessions.c.finished_at.is_(None),
            )
        ).all()
        peers = {
            f"{row.host}:{row.pid}"
            for row in sessions
            if f"{row.host}:{row.pid}" not in (self._worker, *holding)
            and _session_is_live(row.host, row.pid, row.started_at, now, lease)
        }
        return len(peers)

    def renew_lanes(self, run_id: str, venues: Iterable[str], *, lease: float) -> set[str]:
        """Extend this worker's leases; the venues it still holds (a lane taken over since
        is lost for good: nothing more is written or sent for it)."""
        held: set[str] = set()
        started = time.monotonic()
        with self._db.write() as conn:
            now = self._db.now(conn)
            for venue in sorted(set(venues)):
                fence = self._fences.get((run_id, venue))
                if fence is None or fence.lost:
                    continue
                renewed = conn.execute(
                    _lanes.update()
                    .where(
                        _lanes.c.run_id == run_id,
                        _lanes.c.venue == venue,
                        _lanes.c.owner == self._token,
                        _lanes.c.epoch == fence.epoch,
                    )
                    .values(lease_until=now + timedelta(seconds=lease))
                ).rowcount
                if renewed == 1:
                    held.add(venue)
                else:
                    fence.lost = True
        for venue in held:
            self._fences[run_id, venue].valid_until = started + lease
        return held

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """Whether the lease, as the database last granted it, has not run out by this
        process's monotonic clock (a stalled process finds it has). A lane this worker holds
        no fence for (none was claimed) counts as fresh."""
        fence = self._fences.get((run_id, venue))
        if fence is None:
            return True
        return not fence.lost and time.monotonic() < fence.valid_until

    def holds_lane(self, run_id: str, venue: str) -> bool:
        """False once the lane is known to be taken over by another worker."""
        fence = self._fences.get((run_id, venue))
        return fence is None or not fence.lost

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give up this worker's leases on these venues (those still held at our epoch)."""
        with self._db.write() as conn:
            for venue in sorted(set(venues)):
                fence = self._fences.pop((run_id, venue), None)
                if fence is None or fence.lost:
                    continue
                conn.execute(
                    _lanes.update()
                    .where(
                        _lanes.c.run_id == run_id,
                        _lanes.c.venue == venue,
                        _lanes.c.owner == self._token,
                        _lanes.c.epoch == fence.epoch,
                    )
                    .values(owner=None, lease_until=None)
                )

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues of the run that another live worker holds."""
        with self._db.read() as conn:
            now = self._db.now(conn)
            return set(
                conn.execute(
                    sa.select(_lanes.c.venue).where(
                        _lanes.c.run_id == run_id,
                        _lanes.c.owner.is_not(None),
                        _lanes.c.owner != self._token,
                        _lanes.c.lease_until >= now,
                    )
                ).scalars()
            )

    def venues_held_by_other_runs(self, run_id: str) -> dict[str, list[tuple[str, str]]]:
        """The venues a live process of another run holds now: venue -> those runs' (id,
        command). Each run paces itself, so runs at one venue share its limit."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_lanes.c.venue, _lanes.c.run_id, _lanes.c.owner, _runs.c.command)
                .select_from(_lanes.join(_runs, _runs.c.id == _lanes.c.run_id))
                .where(
                    _lanes.c.run_id != run_id,
                    _lanes.c.owner.is_not(None),
                    _lanes.c.lease_until >= self._db.now(conn),
                )
                .order_by(_lanes.c.venue, _lanes.c.run_id)
            ).all()
        held: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            if not owner_is_dead(row.owner):
                held.setdefault(row.venue, []).append((row.run_id, row.command))
        return held

    def last_sent_by_others(self, run_id: str, venue: str) -> datetime | None:
        """When another process last sent a request to this venue for this run."""
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.max(_attempts.c.sent_at))
                .select_from(_attempts.join(_orders, _orders.c.pk == _attempts.c.order_pk))
                .where(
                    _attempts.c.run_id == run_id,
                    _orders.c.venue == venue,
                    _attempts.c.worker != self._worker,
                )
            ).scalar()
        return value if isinstance(value, datetime) else None

    # -- the fence, checked inside the write it guards -----------------------------------------

    def require_lane(self, conn: sa.Connection, run_id: str, venue: str) -> None:
        """Inside a write transaction: LaneLostError unless `fenced` (the write rolls back)."""
        if not self.fenced(conn, run_id, venue):
            raise LaneLostError(venue)


class LaneFence:
    """This worker's fences as its writes check them: called inside a write transaction for
    one venue (`__call__`), or read (`claims`) by a write that sends its fence check in one
    pipeline with the rows it guards and commits only if every lane still matched."""

    def __init__(self, db: Database, token: str, fences: Mapping[tuple[str, str], Fence]) -> None:
        self._db = db
        self.token = token  # the owner the lane rows must still name
        self._fences = fences

    def __call__(self, conn: sa.Connection, run_id: str, venue: str) -> bool:
        """Inside a write transaction: whether this worker still holds `venue`'s lane at the
        epoch it claimed (True where it claimed none). False marks the lane lost for good."""
        fence = self._fences.get((run_id, venue))
        if fence is None:
            return True
        if not fence.lost:
            matched = conn.exec_driver_sql(
                self._db.sql(FENCE),
                {"run_id": run_id, "venue": venue, "owner": self.token, "epoch": fence.epoch},
            ).rowcount
            fence.lost = matched != 1
        return not fence.lost

    def claims(self, run_id: str, venues: Iterable[str]) -> tuple[dict[str, int], set[str]]:
        """The epoch each of these lanes must still have for this worker, and the lanes
        already known lost (a venue this worker claimed no lane for is in neither)."""
        epochs: dict[str, int] = {}
        lost: set[str] = set()
        for venue in venues:
            fence = self._fences.get((run_id, venue))
            if fence is None:
                continue
            if fence.lost:
                lost.add(venue)
            else:
                epochs[venue] = fence.epoch
        return epochs, lost


# -- whether the process named by a lease or a lock still runs ---------------------------------


def process_identity() -> str:
    """This process's identity (see _identity_of)."""
    return _identity_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _identity_of(_pid: int) -> str:
    """What tells this process apart from any other that shares its hostname and pid: the
    boot, the pid namespace (containers) and the process's start time."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_file:
            boot = boot_file.read().strip().replace("-", "")[:12]
    except OSError:
        boot = "noboot"
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        namespace = "nons"
    try:
        started = f"{psutil.Process().create_time():.2f}"
    except psutil.Error:
        started = "0"
    return f"{boot}.{namespace}.{started}"


def owner_is_dead(owner: str) -> bool:
    """True when `owner` (host:pid:identity:token) is surely a process of this very host,
    boot and pid namespace that no longer runs (its pid is gone, or now names a process
    started at another time). Anything less certain is judged alive: its lease will expire."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    boot, namespace, started = [*parts[2].split(".", 2), "", ""][:3]
    mine_boot, mine_namespace, _ = process_identity().split(".", 2)
    if (boot, namespace) != (mine_boot, mine_namespace) or "no" in (boot[:2], namespace[:2]):
        return False
    try:
        other = psutil.Process(int(parts[1]))
        return f"{other.create_time():.2f}" != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _session_is_live(
    host: str, pid: int, started_at: datetime, now: datetime, lease: float
) -> bool:
    """Whether the process of a session still marked running seems to run (see idle_peers)."""
    if host != socket.gethostname():
        return now - started_at <= timedelta(seconds=lease)
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    # A pid reused since: the process now behind it started after the session (1 s of slack).
    return bool(created <= started_at.replace(tzinfo=UTC).timestamp() + 1.0)


def lock_is_stale(owner: str, heartbeat: datetime | None, now: datetime) -> bool:
    """Whether a run lock may be taken from `owner`: it is dead, or its heartbeat is old."""
    if owner_is_dead(owner):
        return True
    return heartbeat is None or now - heartbeat > LOCK_STALE_AFTER
