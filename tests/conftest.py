"""Shared fixtures: simulators on loopback, a migrated SQLite audit database, credentials."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchcancel.simulators.base import Simulator
from batchcancel.simulators.server import SimulatorServer
from tests.pg import PostgresServer, dump, running_server

REQUIRE_PG_VAR = "BATCHCANCEL_TEST_REQUIRE_PG"  # set by .ci/run: no PostgreSQL is a failure

# Credentials used by every test. Distinctive values so that leak searches cannot miss them.
CREDENTIALS: Mapping[str, str] = {
    "BATCHCANCEL_SFOX_API_KEY": "sfox-SECRET-key-7f3a9c",
    "BATCHCANCEL_ETNA_APP_KEY": "etna-SECRET-appkey-51d2",
    "BATCHCANCEL_ETNA_TOKEN": "etna-SECRET-token-88e1",
    "BATCHCANCEL_CRUX_TOKEN": "crux-SECRET-token-0b6e",
    "BATCHCANCEL_TANX_JWT": "tanx-SECRET-jwt-c4a7",
    "BATCHCANCEL_ZEBPAY_JWT": "zebpay-SECRET-jwt-93fd",
    "BATCHCANCEL_ZEBPAY_API_KEY": "zebpay-SECRET-apikey-2e58",
    "BATCHCANCEL_ZEBPAY_API_SECRET": "zebpay-SECRET-hmac-6a1c",
}
SECRET_VALUES: tuple[str, ...] = tuple(CREDENTIALS.values())

ServeSimulators = Callable[[Mapping[str, Simulator]], AbstractAsyncContextManager[SimulatorServer]]


@pytest.fixture
def serve_simulators() -> ServeSimulators:
    """Start simulators on 127.0.0.1 at a free port: `async with serve({...}) as server`."""

    @asynccontextmanager
    async def serve(simulators: Mapping[str, Simulator]) -> AsyncIterator[SimulatorServer]:
        async with SimulatorServer(simulators) as server:
            yield server

    return serve


@dataclass(frozen=True)
class CliResult:
    """A finished `batchcancel` process."""

    code: int
    stdout: str
    stderr: str


def cli_env(db: Path | str, *, credentials: Mapping[str, str] = CREDENTIALS) -> dict[str, str]:
    """The environment of a CLI subprocess: no inherited BATCHCANCEL_*, our credentials, and
    the audit database `db` (a SQLite file path or a database URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
    env.update(credentials)
    env["BATCHCANCEL_DB"] = db if isinstance(db, str) else f"sqlite:///{db}"
    return env


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    """One private PostgreSQL server for the session (None where it is not installed)."""
    with running_server() as server:
        yield server


def postgres_database(postgres: PostgresServer | None) -> str:
    """A fresh PostgreSQL database URL. Without PostgreSQL: a failure under .ci/run (which
    sets REQUIRE_PG_VAR), a skip elsewhere, since a laptop may have no server installed."""
    if postgres is None:
        if os.environ.get(REQUIRE_PG_VAR):
            pytest.fail(f"PostgreSQL is not installed and {REQUIRE_PG_VAR} is set")
        # Skipped only outside CI: .ci/run installs PostgreSQL and sets REQUIRE_PG_VAR.
        pytest.skip("PostgreSQL is not installed (initdb not found)")
    return postgres.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer | None
) -> str:
    """A fresh audit database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return postgres_database(postgres)


def db_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query against the audit database, whichever backend it is."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def db_bytes(url: str) -> bytes:
    """Everything the audit database stores: the SQLite files, or a PostgreSQL dump."""
    if url.startswith("sqlite"):
        path = Path(sa.engine.make_url(url).database or "")
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return dump(url)


async def run_cli(
    *args: str, env: Mapping[str, str], stdin: bytes | None = None, timeout: float = 120
) -> CliResult:
    """Run `python -m batchcancel ARGS` without blocking the loop the simulators serve on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchcancel",
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


def write_venues_toml(path: Path, server: SimulatorServer, **venues: Mapping[str, object]) -> Path:
    """A venues config pointing each named venue at `server`, with the given keys."""
    lines = []
    for name, keys in venues.items():
        lines.append(f"[venues.{name}]")
        lines.append(f'base_url = "{server.url(name)}"')
        lines.extend(f"{key} = {value!r}" for key, value in keys.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_orders_csv(path: Path, rows: list[Mapping[str, str]]) -> Path:
    """An order list with the SPEC columns."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["venue", "order_id", "account_id", "symbol"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_audit_intact(url: str, run: str) -> None:
    """`verify`'s checks on run (id or key): every chain and every row as its facts say."""
    from batchcancel.audit.store import AuditStore
    from batchcancel.audit.verify import verify_run

    store = AuditStore(url)
    try:
        verdict = verify_run(store.engine, store.find_run(run).id)
    finally:
        store.close()
    assert verdict.intact, verdict.problem
