"""Audit runs: recording and finding them, their status and totals, the run lock and its
heartbeat, and the sessions (each process's turn at a run)."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel import __version__
from batchcancel.audit.chain import Chains, stamp
from batchcancel.audit.clock import clock_evidence
from batchcancel.audit.db import Database
from batchcancel.audit.leases import lock_is_stale
from batchcancel.audit.records import LOADING, RunInfo, utcnow
from batchcancel.audit.tables import Run, Session
from batchcancel.errors import AuditError, RunKeyTakenError, RunLockedError, RunNotFoundError

__all__ = ["RunBook"]

_runs: Final = cast(sa.Table, Run.__table__)
_sessions: Final = cast(sa.Table, Session.__table__)


class RunBook:
    """The runs table and the sessions table. `token` is this process's lock owner; `clean`
    is the store's redactor for stored text."""

    def __init__(
        self, db: Database, *, token: str, clean: Callable[[str], str], chains: Chains
    ) -> None:
        self._db = db
        self._chains = chains
        self._session_runs: dict[int, str] = {}
        self._token = token
        self._clean = clean

    def create_run(
        self,
        *,
        command: str,
        run_key: str | None,
        source: str,
        options: Mapping[str, Any],
        reason: str,
        command_line: str,
        dry_run: bool,
    ) -> str:
        """Record a new run; its id is time-ordered and unique. RunKeyTakenError when another
        process recorded a run with `run_key` since the caller looked (it is that run)."""
        now = utcnow()
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        try:
            self._insert_run(
                run_id,
                now,
                command=command,
                run_key=run_key,
                source=source,
                options=options,
                reason=reason,
                command_line=command_line,
                dry_run=dry_run,
            )
        except AuditError:
            if run_key is not None and (taken := self.find_run_key(run_key)) is not None:
                raise RunKeyTakenError(
                    f"run key {run_key} was just recorded by another process (run {taken.id})"
                ) from None
            raise
        return run_id

    def _insert_run(
        self,
        run_id: str,
        now: datetime,
        *,
        command: str,
        run_key: str | None,
        source: str,
        options: Mapping[str, Any],
        reason: str,
        command_line: str,
        dry_run: bool,
    ) -> None:
        row: dict[str, Any] = {
            "run_key": run_key,
            "command": command,
            "status": LOADING,
            "dry_run": dry_run,
            "source": self._clean(source),
            "options": self._clean(json.dumps(dict(options), sort_keys=True)),
            "reason": self._clean(reason),
            "os_user": _os_user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command_line": self._clean(command_line),
            "version": __version__,
            "orders_total": 0,
            "duplicates": 0,
            "sessions": 0,
            "clock": json.dumps(clock_evidence(), sort_keys=True),
        }
        with self._chains.recorded(run_id) as (conn, facts):
            conn.execute(
                _runs.insert().values(
                    id=run_id,
                    created_at=now,
                    # Its loader holds it from the start: a process that finds it still
                    # loading joins it instead of recording the same rows again.
                    lock_owner=self._token,
                    lock_heartbeat=now,
                    **row,
                )
            )
            facts.append(
                {
                    "t": "run",
                    "id": run_id,
                    **row,
                    "created_at": stamp(now),
                    "started_at": None,
                    "finished_at": None,
                }
            )

    def find_run(self, run: str) -> RunInfo:
        """A run by id or run key; RunNotFoundError if neither matches."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(_runs).where(sa.or_(_runs.c.id == run, _runs.c.run_key == run))
            ).first()
        if row is None:
            raise RunNotFoundError(f"no run with id or key {run!r} in the audit database")
        return _run_info(row)

    def find_run_key(self, run_key: str) -> RunInfo | None:
        """The run with this key, if any."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(_runs).where(_runs.c.run_key == run_key)).first()
        return None if row is None else _run_info(row)

    def recent_runs(self, limit: int = 20) -> list[RunInfo]:
        """The newest runs first."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_runs).order_by(_runs.c.created_at.desc()).limit(limit)
            ).all()
        return [_run_info(row) for row in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        """Record where the run stands, and when the latest session ended."""
        now = utcnow()
        with self._chains.recorded(run_id) as (conn, facts):
            recorded = conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id)
                .values(
                    # a run whose loading was cut short stays `loading`: its key loads the rest
                    status=sa.case((_runs.c.status == LOADING, LOADING), else_=status),
                    finished_at=now,
                )
                .returning(_runs.c.status)
            ).scalar_one()
            facts.append({"t": "status", "run": {"status": recorded, "finished_at": stamp(now)}})

    def set_totals(self, run_id: str, *, orders_total: int, duplicates: int) -> None:
        """Record how many orders the run holds once they are all loaded: loading is over."""
        with self._chains.recorded(run_id) as (conn, facts):
            status = conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id)
                .values(
                    orders_total=orders_total,
                    duplicates=duplicates,
                    status=sa.case((_runs.c.status == LOADING, "running"), else_=_runs.c.status),
                )
                .returning(_runs.c.status)
            ).scalar_one()
            totals = {"orders_total": orders_total, "duplicates": duplicates, "status": status}
            facts.append({"t": "totals", "run": totals})

    def lock_run(self, run_id: str) -> None:
        """Take the run for this process; RunLockedError if another live process holds it.
        (The process that records a new run holds it from the start: see create_run.)"""
        with self._db.write() as conn:
            now = self._db.now(conn)
            row = conn.execute(
                sa.select(_runs.c.lock_owner, _runs.c.lock_heartbeat).where(_runs.c.id == run_id)
            ).one()
            owner, heartbeat = row.lock_owner, row.lock_heartbeat
            if owner and owner != self._token and not lock_is_stale(owner, heartbeat, now):
                host, pid = owner.split(":")[:2]
                raise RunLockedError(
                    f"run {run_id} is being worked by process {pid} on {host} "
                    f"(last heartbeat {heartbeat:%Y-%m-%d %H:%M:%S} UTC); wait for it to finish "
                    "or stop it, then resume"
                )
            # Compare-and-set on the owner we saw, so two processes racing here cannot both win.
            taken = conn.execute(
                _runs.update()
                .where(
                    _runs.c.id == run_id,
                    _runs.c.lock_owner.is_(None) if owner is None else _runs.c.lock_owner == owner,
                )
                .values(lock_owner=self._token, lock_heartbeat=now)
            ).rowcount
            if taken != 1:
                raise RunLockedError(f"run {run_id} was just taken by another process")

    def heartbeat(self, run_id: str) -> None:
        """Keep the run lock fresh."""
        with self._db.write() as conn:
            conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id, _runs.c.lock_owner == self._token)
                .values(lock_heartbeat=self._db.now(conn))
            )

    def loading_elsewhere(self, run_id: str) -> bool:
        """Whether another live process is still recording the run's orders."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(_runs.c.status, _runs.c.lock_owner, _runs.c.lock_heartbeat).where(
                    _runs.c.id == run_id
                )
            ).one()
            now = self._db.now(conn)
        owner = row.lock_owner
        return (
            row.status == LOADING
            and owner is not None
            and owner != self._token
            and not lock_is_stale(owner, row.lock_heartbeat, now)
        )

    def unlock_run(self, run_id: str) -> None:
        """Release the run lock if this process holds it."""
        with self._db.write() as conn:
            conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id, _runs.c.lock_owner == self._token)
                .values(lock_owner=None, lock_heartbeat=None)
            )

    def start_session(self, run_id: str, *, command: str, command_line: str) -> int:
        """Record this process's turn at the run: who, where, what command line."""
        now = utcnow()
        session = {
            "command": command,
            "os_user": _os_user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command_line": self._clean(command_line),
            "version": __version__,
            "status": "running",
        }
        with self._chains.recorded(run_id) as (conn, facts):
            session_id = conn.execute(
                _sessions.insert()
                .values(run_id=run_id, started_at=now, **session)
                .returning(_sessions.c.id)
            ).scalar_one()
            run = conn.execute(
                _runs.update()
                .where(_runs.c.id == run_id)
                .values(
                    started_at=now,
                    sessions=_runs.c.sessions + 1,
                    # a run still loading its orders stays `loading` until every row is in
                    status=sa.case((_runs.c.status == LOADING, LOADING), else_="running"),
                )
                .returning(_runs.c.sessions, _runs.c.status)
            ).one()
            facts.append(
                {
                    "t": "session",
                    "id": int(session_id),
                    **session,
                    "started_at": stamp(now),
                    "finished_at": None,
                    "run": {
                        "started_at": stamp(now),
                        "sessions": int(run.sessions),
                        "status": run.status,
                    },
                }
            )
        self._session_runs[int(session_id)] = run_id
        return int(session_id)

    def finish_session(self, session_id: int, status: str) -> str:
        """Record how this process's turn ended; the run it belongs to."""
        run_id = self._session_runs.get(session_id)
        if run_id is None:
            with self._db.read() as conn:
                run_id = conn.execute(
                    sa.select(_sessions.c.run_id).where(_sessions.c.id == session_id)
                ).scalar_one()
        now = utcnow()
        with self._chains.recorded(run_id) as (conn, facts):
            conn.execute(
                _sessions.update()
                .where(_sessions.c.id == session_id)
                .values(finished_at=now, status=status)
            )
            facts.append(
                {"t": "session_end", "id": session_id, "finished_at": stamp(now), "status": status}
            )
        return str(run_id)


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def _run_info(row: sa.Row[Any]) -> RunInfo:
    try:
        options = json.loads(row.options or "{}")
    except ValueError:
        options = {}
    return RunInfo(
        id=row.id,
        run_key=row.run_key,
        command=row.command,
        status=row.status,
        dry_run=bool(row.dry_run),
        source=row.source,
        reason=row.reason,
        orders_total=row.orders_total,
        duplicates=row.duplicates,
        created_at=row.created_at,
        finished_at=row.finished_at,
        options=options,
    )
