"""The jobs in jobs/ and their Airflow DAG, with the real Apache Airflow.

Airflow lives in its own virtualenv (its dependencies are not ours to pin): a session fixture
builds it once with pip (apache-airflow 3.1 plus this checkout, editable) and reuses it while
its marker matches. The DAG file is then loaded by Airflow's DagBag, and `airflow dags test`
runs the end-of-day DAG against the five venue simulators on loopback, with a SQLite desk
database, a SQLite audit database and SQLite for Airflow's own metadata. Running the same DAG
run again (same run id, so the same run keys) sends nothing new.

The job runner (batchcancel.jobs, behind jobs/run_job.py and the DAG) is tested here too,
without Airflow: command lines, the per-venue split of a query or a CSV, and what each exit
code means for a scheduler.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from batchcancel import jobs as rj
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import Fault, OrderState, Simulator
from batchcancel.simulators.server import serve_in_thread
from tests.conftest import CREDENTIALS, SECRET_VALUES, postgres_database
from tests.pg import PostgresServer

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "jobs"
DAGS_FOLDER = JOBS / "airflow"
AIRFLOW_SPEC = "apache-airflow==3.1.*"
VENV_VAR = "BATCHCANCEL_AIRFLOW_VENV"  # where the Airflow virtualenv goes (default below)
DEFAULT_VENV = Path("/tmp/batchcancel-airflow-venv")
INSTALL_TIMEOUT = 1200.0  # seconds per pip command
AIRFLOW_TIMEOUT = 300.0  # seconds per airflow command
EOD_DAG = "batchcancel_eod_cleanup"
KILL_DAG = "batchcancel_kill_switch"
BOOKS_DAG = "batchcancel_kill_switch_books"
VENUES = ("sfox", "etna", "crux", "tanx", "zebpay")
PER_VENUE = 12  # open orders per venue in the desk database


# -- the Airflow virtualenv -----------------------------------------------------------------


def _fingerprint() -> str:
    """What the virtualenv was built from: a change rebuilds it."""
    pyproject = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f"{AIRFLOW_SPEC} | {sys.version_info[:2]} | {REPO} | {pyproject}\n"


def _pip(python: Path, *args: str, log: Path) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ pip {' '.join(args)}\n")
        out.flush()
        try:
            done = subprocess.run(
                [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"pip {' '.join(args)} took over {INSTALL_TIMEOUT:g} s; see {log}")
    if done.returncode:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(True)[-30:])
        pytest.fail(f"pip {' '.join(args)} failed (exit {done.returncode}):\n{tail}")


def _lock(fd: int) -> None:
    """An exclusive lock on `fd`, waiting at most as long as another session's build may."""
    give_up = time.monotonic() + 2 * INSTALL_TIMEOUT + 300
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > give_up:
                pytest.fail("another test session has been building the Airflow venv too long")
            time.sleep(1)


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """A virtualenv with Apache Airflow and this checkout; built once, reused while its marker
    (Airflow version, Python, checkout path, pyproject.toml) matches."""
    venv = Path(os.environ.get(VENV_VAR) or DEFAULT_VENV)
    marker = venv / ".batchcancel-complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        _lock(lock.fileno())  # two test sessions never build it at once
        if marker.is_file() and marker.read_text(encoding="utf-8") == _fingerprint():
            return venv
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        log = venv / "install.log"
        python = venv / "bin" / "python"
        _pip(python, "install", AIRFLOW_SPEC, log=log)
        _pip(python, "install", "-e", str(REPO), log=log)
        marker.write_text(_fingerprint(), encoding="utf-8")
        print(f"Airflow virtualenv built in {time.monotonic() - started:.0f} s: {venv}")
    return venv


@pytest.fixture(scope="module")
def airflow_home(airflow_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AIRFLOW_HOME with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow-home")
    done = _airflow(airflow_venv, home, ["airflow", "db", "migrate"], {})
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def _airflow(
    venv: Path, home: Path, argv: list[str], extra: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a command of the Airflow virtualenv, configured for our dags folder only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BATCHCANCEL_", "AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    env.update(extra)
    command = [str(venv / "bin" / argv[0]), *argv[1:]]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=AIRFLOW_TIMEOUT, cwd=home
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(argv)} took over {AIRFLOW_TIMEOUT:g} s:\n{exc.stderr!s:.3000}")
    with (home / "commands.log").open("a", encoding="utf-8") as log:  # for a failure's autopsy
        log.write(f"\n$ {' '.join(argv[:4])} ({time.monotonic() - started:.1f} s, exit ")
        log.write(f"{done.returncode})\n{done.stdout}\n{done.stderr}\n")
    return done


# -- the DAG file in Airflow ----------------------------------------------------------------

INSPECT = """
import json, sys
from types import SimpleNamespace
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
module = sys.modules[next(m for m in sys.modules if m.endswith("batchcancel_dag"))]
context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "ti": SimpleNamespace(map_index=3)}
print(json.dumps({
    "errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "warnings": {str(k): list(v) for k, v in bag.captured_warnings.items()},
    "dags": {
        dag_id: {
            "tasks": sorted(dag.task_ids),
            "mapped": {
                t.task_id: t.get_parse_time_mapped_ti_count()
                for t in dag.tasks
                if any(c.__name__ == "MappedOperator" for c in type(t).__mro__)
            },
            "schedule": None if dag.schedule is None else str(dag.schedule),
            "max_active_runs": dag.max_active_runs,
            "retries": [t.retries for t in dag.tasks],
        }
        for dag_id, dag in bag.dags.items()
    },
    "run_key": module.dag_run_key(context, "sfox"),
}))
"""


class TestDagFile:
    def test_imports_cleanly_in_airflow(self, airflow_venv: Path, airflow_home: Path) -> None:
        """Airflow's DagBag loads the DAG file with no import error and no warning: one DAG
        per job file, each one mapped `cancel` task; the run key holds dag id, run id, map
        index (and the venue)."""
        done = _airflow(airflow_venv, airflow_home, ["python", "-c", INSPECT, str(DAGS_FOLDER)], {})
        assert done.returncode == 0, done.stderr[-3000:]
        found = json.loads(done.stdout.strip().splitlines()[-1])
        assert found["errors"] == {}
        assert found["warnings"] == {}
        assert set(found["dags"]) == {EOD_DAG, KILL_DAG, BOOKS_DAG}
        for dag in found["dags"].values():
            assert dag["tasks"] == ["cancel"]
            assert dag["mapped"] == {"cancel": len(VENUES)}  # one task per venue
            assert dag["max_active_runs"] == 1
        assert found["dags"][EOD_DAG]["schedule"] is not None
        assert found["dags"][EOD_DAG]["retries"] == [3]
        assert found["dags"][KILL_DAG]["schedule"] is None
        assert found["dags"][BOOKS_DAG]["schedule"] is None
        assert found["dags"][BOOKS_DAG]["retries"] == [5]
        assert found["run_key"] == "d:r:3:sfox"


# -- the end-of-day DAG end to end ----------------------------------------------------------


def _order(venue: str, n: int) -> dict[str, str]:
    if venue == "crux":
        return {"order_id": str(uuid.UUID(int=n + 1, version=4)), "account_id": "", "symbol": ""}
    if venue == "etna":
        return {"order_id": str(700000 + n), "account_id": "77", "symbol": ""}
    if venue == "zebpay":
        return {"order_id": f"eod-{n}", "account_id": "", "symbol": "BTCUSDT"}
    return {"order_id": str(800000 + n), "account_id": "", "symbol": ""}


@contextlib.contextmanager
def _desk(tmp_path: Path) -> Iterator[tuple[dict[str, Simulator], Path, list[tuple[str, str]]]]:
    """Five simulators serving on loopback, each seeded with open orders, and a SQLite desk
    database whose open_orders table lists them (plus filled rows the query must not pick)."""
    simulators = {
        name: SIMULATORS[name](credentials=CREDENTIALS, rate_limit=100, period=1.0)
        for name in VENUES
    }
    desk = tmp_path / "desk.db"
    opened: list[tuple[str, str]] = []
    with contextlib.closing(sqlite3.connect(desk)) as conn:
        conn.execute(
            "create table open_orders (venue text, order_id text, account_id text, "
            "symbol text, status text)"
        )
        for venue in VENUES:
            for n in range(PER_VENUE + 3):
                fields = _order(venue, n)
                status = "open" if n < PER_VENUE else "filled"
                if status == "open":
                    simulators[venue].seed({fields["order_id"]: OrderState.OPEN})
                    opened.append((venue, fields["order_id"]))
                conn.execute(
                    "insert into open_orders values (?, ?, ?, ?, ?)",
                    (venue.upper() if n == 0 else venue, *fields.values(), status),
                )
        conn.commit()
    with serve_in_thread(simulators) as server:
        config = tmp_path / "venues.toml"
        config.write_text(
            "".join(
                f'[venues.{name}]\nbase_url = "{server.url(name)}"\nrate_limit = 100\n'
                f"period = 1.0\n"
                for name in VENUES
            ),
            encoding="utf-8",
        )
        yield simulators, desk, opened


def _job_env(tmp_path: Path, desk: Path) -> dict[str, str]:
    """What a worker's environment gives the DAG: databases, venues config, credentials. The
    sFOX key comes through an Airflow connection instead of a variable."""
    env = {k: v for k, v in CREDENTIALS.items() if k != "BATCHCANCEL_SFOX_API_KEY"}
    env["AIRFLOW_CONN_BATCHCANCEL_SFOX"] = json.dumps(
        {
            "conn_type": "generic",
            "extra": {"BATCHCANCEL_SFOX_API_KEY": CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"]},
        }
    )
    env["BATCHCANCEL_DB"] = f"sqlite:///{tmp_path / 'audit.db'}"
    env["BATCHCANCEL_VENUES"] = str(tmp_path / "venues.toml")
    env["DESK_DB_URL"] = f"sqlite:///{desk}"
    return env


def _requests(simulators: Mapping[str, Simulator]) -> dict[str, dict[str, int]]:
    """Cancels each order got, one by one or named in a bulk cancel (sFOX under `kill`)."""
    counts = {}
    for name, simulator in simulators.items():
        per_order = Counter(simulator.requests)
        per_order.update(getattr(simulator, "bulk_ids", {}))
        counts[name] = dict(per_order)
    return counts


def _audit(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "audit.db")) as conn:
        return list(conn.execute(sql))


SAME_RUN = """
import json, sys
from datetime import datetime
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
dag = bag.dags[sys.argv[2]]
run = dag.test(
    logical_date=datetime.fromisoformat(sys.argv[3]), run_after=datetime.fromisoformat(sys.argv[4])
)
print(json.dumps({"run_id": run.run_id, "state": str(run.state)}))
"""


class TestEodDag:
    def test_dags_test_cancels_each_order_once_and_same_run_resumes(
        self, tmp_path: Path, airflow_venv: Path, airflow_home: Path
    ) -> None:
        """`airflow dags test` runs the shipped end-of-day job over five venues: success, one
        cancel per open order and none for the rest, one batchcancel run per mapped task
        keyed by dag id, run id, map index and venue. The same DAG run again (same run id)
        resumes those runs and sends nothing."""
        logical = "2025-06-02T21:30:00+00:00"
        with _desk(tmp_path) as (simulators, desk, opened):
            env = _job_env(tmp_path, desk)
            first = _airflow(
                airflow_venv, airflow_home, ["airflow", "dags", "test", EOD_DAG, logical], env
            )
            output = first.stdout + first.stderr
            assert first.returncode == 0, output[-5000:]
            after_first = _requests(simulators)
            # One cancel per open order, at the venue that has it; nothing else was sent.
            want = {name: {} for name in VENUES}  # type: dict[str, dict[str, int]]
            for venue, order_id in opened:
                want[venue][order_id] = 1
            assert after_first == want
            assert all(s.rate_limited == 0 and s.auth_refused == 0 for s in simulators.values())
            assert not any(secret in output for secret in SECRET_VALUES)

            keys = sorted(k for (k,) in _audit(tmp_path, "select run_key from runs"))
            assert len(keys) == len(VENUES)
            run_id = keys[0].removeprefix(f"{EOD_DAG}:").rsplit(":", 2)[0]  # ids hold colons
            assert run_id.startswith("manual__")
            assert keys == sorted(f"{EOD_DAG}:{run_id}:{i}:{v}" for i, v in enumerate(VENUES))
            outcomes = _audit(tmp_path, "select outcome, count(*) from orders group by outcome")
            assert dict(outcomes) == {
                "canceled": PER_VENUE * (len(VENUES) - 1),
                "cancel_pending": PER_VENUE,  # Crux answers every cancel "sent to supplier"
            }

            # The same DAG run again: `airflow dags test` names a run after the wall clock, so
            # the equivalent DAG.test() call pins run_after to give the same run id.
            run_after = run_id.removeprefix("manual__")
            second = _airflow(
                airflow_venv,
                airflow_home,
                ["python", "-c", SAME_RUN, str(DAGS_FOLDER), EOD_DAG, logical, run_after],
                env,
            )
            assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
            again = json.loads(second.stdout.strip().splitlines()[-1])
            assert again == {"run_id": run_id, "state": "success"}
            assert _requests(simulators) == after_first  # nothing new was sent
            sessions = _audit(tmp_path, "select run_key, sessions from runs")
            assert len(sessions) == len(VENUES)
            assert all(n == 2 for _, n in sessions), sessions  # each run resumed, not restarted
        assert datetime.fromisoformat(run_after)  # a timestamp, as the CLI makes it


def _jobs_with_source_dir(tmp_path: Path, source_dir: Path) -> Path:
    """A copy of the shipped kill switch job whose trigger-time order lists come from
    `source_dir` (the shipped file names none, so it refuses them)."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    text = (JOBS / "kill_switch.toml").read_text(encoding="utf-8")
    assert text.count("\n[job]\n") == 1
    text = text.replace("\n[job]\n", f"\n[job]\nsource_dir = {json.dumps(str(source_dir))}\n")
    (folder / "kill_switch.toml").write_text(text, encoding="utf-8")
    shutil.copy(JOBS / "venues.toml", folder / "venues.toml")
    return folder


class TestKillSwitchDag:
    def test_csv_from_conf_retry_resumes_and_a_failing_venue_fails_its_task_only(
        self, tmp_path: Path, airflow_venv: Path, airflow_home: Path
    ) -> None:
        """The kill switch triggered with a CSV in its conf: `batchcancel kill` per venue from
        the split list. One tanX order meets 5xx answers until the job's max_attempts run out:
        its task fails, Airflow retries it, and the retry resumes the same run, sending that
        order alone. A row for a venue outside the job lands in the first venue's task, which
        records it invalid and fails without a retry; the other venues' tasks succeed."""
        with _desk(tmp_path) as (simulators, desk, opened):
            flaky = next(order_id for venue, order_id in opened if venue == "tanx")
            simulators["tanx"].faults.script(flaky, *[Fault.SERVER_ERROR] * 3)  # max_attempts 3
            orders = tmp_path / "kill.csv"
            with orders.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["venue", "order_id", "account_id", "symbol"])
                for venue, order_id in opened:
                    fields = {"etna": ["77", ""], "zebpay": ["", "BTCUSDT"]}
                    writer.writerow([venue, order_id, *fields.get(venue, ["", ""])])
                writer.writerow(["binance", "12345", "", ""])
            conf = json.dumps({"source": str(orders), "reason": "test kill"})
            env = _job_env(tmp_path, desk)
            env["BATCHCANCEL_JOBS_DIR"] = str(_jobs_with_source_dir(tmp_path, tmp_path))
            done = _airflow(
                airflow_venv,
                airflow_home,
                ["airflow", "dags", "test", KILL_DAG, "2025-06-03T10:00:00+00:00", "-c", conf],
                env,
            )
            output = done.stdout + done.stderr
            assert done.returncode != 0, output[-5000:]  # the DAG run failed: sFOX's task
            want = {name: {o: 1 for v, o in opened if v == name} for name in VENUES}
            want["tanx"][flaky] = 4  # three 5xx in the first try, the cancel in the retry
            assert _requests(simulators) == want
        with contextlib.closing(sqlite3.connect(airflow_home / "airflow.db")) as conn:
            tasks = dict(
                (row[0], row[1:])
                for row in conn.execute(
                    "select map_index, state, try_number from task_instance where dag_id = ?",
                    (KILL_DAG,),
                )
            )
        assert tasks == {
            0: ("failed", 1),  # sfox: the stray row is invalid; no retry can change that
            1: ("success", 1),
            2: ("success", 1),
            3: ("success", 2),  # tanx: retried once, and the retry resumed
            4: ("success", 1),
        }
        runs = {
            key.rsplit(":", 1)[1]: rest
            for key, *rest in _audit(tmp_path, "select run_key, command, sessions from runs")
        }
        assert runs == {v: ["kill", 2 if v == "tanx" else 1] for v in VENUES}
        invalid = _audit(tmp_path, "select venue, order_id from orders where outcome = 'invalid'")
        assert invalid == [("binance", "12345")]
        reasons = {r for (r,) in _audit(tmp_path, "select reason from runs")}
        assert reasons == {"test kill"}


# -- the runner, without Airflow ------------------------------------------------------------


def _job(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    return rj.load_job(path)


QUERY_JOB = """
[job]
command = "run"
query = "select venue, order_id from open_orders;"
source_db_env = "DESK_DB_URL"
venues = ["sfox", "tanx"]
reason = "eod"
deadline = 30
"""


class TestRunner:
    def test_shipped_jobs_load(self) -> None:
        jobs, errors = rj.load_jobs(JOBS)
        assert errors == {}
        assert {j.name: j.command for j in jobs} == {
            "eod_cleanup": "run",
            "kill_switch": "kill",
            "kill_switch_books": "kill",
        }
        for job in jobs:
            assert job.venues == VENUES
            assert job.venues_config == JOBS / "venues.toml"
        books = {j.name: j.from_venues for j in jobs}
        assert books == {"eod_cleanup": (), "kill_switch": (), "kill_switch_books": VENUES}
        from batchcancel.config import load_settings

        load_settings({}, venues_config=str(JOBS / "venues.toml"))  # batchcancel accepts it

    def test_run_key_has_dag_run_and_map_index(self) -> None:
        assert rj.run_key("eod", "scheduled__2025-01-02", 4, "zebpay") == (
            "eod:scheduled__2025-01-02:4:zebpay"
        )
        long = rj.run_key("d" * 200, "r" * 200, 0, "sfox")
        assert len(long) == 255 and long == rj.run_key("d" * 200, "r" * 200, 0, "sfox")
        assert long != rj.run_key("d" * 200, "r" * 200, 1, "sfox")

    def test_command_line(self, tmp_path: Path) -> None:
        job = _job(tmp_path, QUERY_JOB)
        environ = {"BATCHCANCEL_DB": "sqlite:///a.db", "DESK_DB_URL": "postgresql://u:pw@h/d"}
        invocation = rj.build_invocation(job, venue="tanx", key="K", environ=environ)
        argv = list(invocation.argv)
        assert argv[:4] == [sys.executable, "-m", "batchcancel", "run"]
        assert argv[argv.index("--venue") + 1] == "tanx"
        assert argv[argv.index("--run-key") + 1] == "K"
        assert "--json" in argv and "--deadline" in argv
        # Database URLs reach the child through its environment, never its argv.
        assert "--source-db" not in argv and "--db" not in argv
        assert not any("pw" in arg for arg in argv)
        assert invocation.env["BATCHCANCEL_SOURCE_DB"] == "postgresql://u:pw@h/d"
        assert invocation.env["BATCHCANCEL_DB"] == "sqlite:///a.db"
        assert "pw" not in invocation.shown and "pw" not in repr(invocation)
        with pytest.raises(rj.JobError, match="BATCHCANCEL_DB"):
            rj.build_invocation(job, venue="tanx", key="K", environ={"DESK_DB_URL": "x"})
        with pytest.raises(rj.JobError, match="DESK_DB_URL"):
            rj.build_invocation(job, venue="tanx", key="K", environ={"BATCHCANCEL_DB": "x"})
        with pytest.raises(rj.JobError, match="not one of"):
            rj.build_invocation(job, venue="etna", key="K", environ=environ)

    def test_all_open_is_passed_on_only_when_asked(self, tmp_path: Path) -> None:
        """`all_open = true` adds --all-open (cancel-all endpoints); off by default."""
        environ = {"BATCHCANCEL_DB": "sqlite:///a.db", "DESK_DB_URL": "sqlite:///d.db"}
        plain = rj.build_invocation(
            _job(tmp_path, QUERY_JOB), venue="tanx", key="K", environ=environ
        )
        assert "--all-open" not in plain.argv
        job = _job(tmp_path, QUERY_JOB + "all_open = true\n")
        assert "--all-open" in rj.build_invocation(job, venue="tanx", key="K", environ=environ).argv
        with pytest.raises(rj.JobError, match="all_open must be true or false"):
            _job(tmp_path, QUERY_JOB + 'all_open = "yes"\n')

    def test_query_split_per_venue(self, tmp_path: Path) -> None:
        """Each task's query returns its venue's rows; rows for venues outside the job go to
        the first venue's task (where --venue records them invalid), none are lost."""
        desk = tmp_path / "desk.db"
        with contextlib.closing(sqlite3.connect(desk)) as conn:
            conn.execute("create table open_orders (venue text, order_id text)")
            rows = [("sfox", "1"), (" SFOX ", "2"), ("tanx", "3"), ("binance", "4"), ("", "5")]
            conn.executemany("insert into open_orders values (?, ?)", rows)
            got = {
                venue: sorted(
                    r[1]
                    for r in conn.execute(
                        rj.venue_query(
                            "select venue, order_id from open_orders;",
                            venue=venue,
                            venues=["sfox", "tanx"],
                        )
                    )
                )
                for venue in ("sfox", "tanx")
            }
        assert got == {"sfox": ["1", "2", "4"], "tanx": ["3"]}
        with pytest.raises(rj.JobError):
            rj.venue_query("select 1", venue="x'; drop table t; --", venues=["sfox"])

    def test_csv_split_per_venue(self, tmp_path: Path) -> None:
        source = tmp_path / "orders.csv"
        source.write_text(
            "Venue ,order_id,symbol\nsfox,007,\ntanx,3,\nbinance,4,\n,5,\nSFOX,8,x\n",
            encoding="utf-8",
        )
        sfox, blank = rj.split_csv(source, venue="sfox", venues=["sfox", "tanx"])
        assert list(csv.reader(io.StringIO(sfox.decode()))) == [
            ["Venue ", "order_id", "symbol"],
            ["sfox", "007", ""],
            ["binance", "4", ""],
            ["SFOX", "8", "x"],
        ]
        assert blank == 1
        tanx, _ = rj.split_csv(source, venue="tanx", venues=["sfox", "tanx"])
        assert tanx.decode().splitlines()[1:] == ["tanx,3,"]

    @pytest.mark.parametrize(
        ("code", "summary", "ok", "retry"),
        [
            (0, {"run_id": "r", "status": "succeeded", "orders": 1, "outcomes": {"canceled": 1}}, True, False),
            (1, {"run_id": "r", "status": "attention", "orders": 2, "outcomes": {"canceled": 1, "failed": 1}}, False, True),
            (1, {"run_id": "r", "status": "attention", "orders": 2, "outcomes": {"canceled": 1, "skipped": 1}}, False, True),
            (1, {"run_id": "r", "status": "attention", "orders": 2, "outcomes": {"canceled": 1, "not_found": 1}}, False, False),
            (1, None, False, True),
            (2, None, False, False),
            (3, {"run_id": "r", "status": "stopped", "orders": 2, "outcomes": {"skipped": 2}}, False, True),
            (-9, None, False, True),
            # --from-venues: a book not proven flat is worth a retry, which lists it again,
            # even when every order the run holds is final; a flat book changes nothing.
            (1, {"run_id": "r", "status": "attention", "orders": 0, "outcomes": {}, "books": {"etna": {"verdict": "not_flat"}}}, False, True),
            (1, {"run_id": "r", "status": "attention", "orders": 1, "outcomes": {"cancel_pending": 1}, "books": {"crux": {"verdict": "draining"}}}, False, True),
            (1, {"run_id": "r", "status": "attention", "orders": 2, "outcomes": {"canceled": 1, "not_found": 1}, "books": {"sfox": {"verdict": "flat"}}}, False, False),
            (0, {"run_id": "r", "status": "succeeded", "orders": 1, "outcomes": {"canceled": 1}, "books": {"sfox": {"verdict": "flat"}}}, True, False),
        ],
    )  # fmt: skip
    def test_exit_codes(
        self, code: int, summary: dict[str, Any] | None, ok: bool, retry: bool
    ) -> None:
        succeeded, retryable, _ = rj.classify(code, summary)
        assert (succeeded, retryable) == (ok, retry)

    def test_runs_batchcancel_and_maps_its_exit(self, tmp_path: Path) -> None:
        """The runner against the real CLI: a usage error (a source file that does not exist)
        is not retryable, and the message says so."""
        job = _job(
            tmp_path,
            '[job]\ncommand = "run"\nsource = "missing.csv"\nvenues = ["sfox"]\nmax_attempts = 1\n',
        )
        lines: list[str] = []
        with pytest.raises(rj.JobError, match="cannot be read"):
            rj.run_job(job, venue="sfox", key="k", environ={"BATCHCANCEL_DB": "sqlite:///x"})
        (tmp_path / "missing.csv").write_text("order_id\nnot-a-number\n", encoding="utf-8")
        env = {**os.environ, "BATCHCANCEL_DB": f"sqlite:///{tmp_path / 'audit.db'}"}
        env["BATCHCANCEL_VENUES"] = str(tmp_path / "v.toml")
        (tmp_path / "v.toml").write_text(
            '[venues.sfox]\nbase_url = "http://127.0.0.1:9/sfox"\n', encoding="utf-8"
        )
        with pytest.raises(rj.JobFailed) as failed:
            rj.run_job(job, venue="sfox", key="k", environ=env, log=lines.append, timeout=120)
        # sFOX ids are strings, so the row is sent; port 9 refuses: transient, resumable.
        assert failed.value.retryable
        assert failed.value.result is not None and failed.value.result.code in (1, 3)
        assert any("run key k" in line for line in lines)


# -- a kill switch from the venues' own books ----------------------------------------------

BOOKS_JOB = """
[job]
command = "kill"
from_venues = true
venues = ["sfox", "etna"]
reason = "runaway"
deadline = 30
max_attempts = 3
account = ["77", "78"]
side = "sell"
"""
BOOK_ORDERS = 8  # working orders in each simulated book, none of them in any input


def _scope_flags(argv: list[str]) -> list[str]:
    """The --from-venues flag and the scope filters of a child's argv, in order."""
    flags, taken = [], ("--from-venues", "--account", "--symbol", "--side")
    for n, arg in enumerate(argv):
        if arg in taken:
            flags += [arg, argv[n + 1]]
    return flags


class TestFromTheBooks:
    def test_the_job_files_from_venues_and_scope_reach_the_child(self, tmp_path: Path) -> None:
        """`from_venues = true` with account, symbol and side: each task's child is
        `batchcancel kill --from-venues <its venue>` with the scope, one flag per value, and
        no order source at all; the child sees exactly that argv (what `ps` shows, too),
        with no credential on it. Every such flag is an option of `batchcancel kill`."""
        from batchcancel.cli import cli

        job = _job(tmp_path, BOOKS_JOB + 'symbol = "AAPL"\n')
        assert (job.from_venues, job.account, job.symbol, job.side) == (
            ("sfox", "etna"),
            ("77", "78"),
            ("AAPL",),
            "sell",
        )
        command, record = _recorder(tmp_path, "stop")
        env = {"BATCHCANCEL_DB": "sqlite:///unused.db", "BATCHCANCEL_COMMAND": command}
        env.update(CREDENTIALS)
        lines: list[str] = []
        for venue in ("sfox", "etna"):
            with pytest.raises(rj.JobFailed):  # the recorder stands in, and exits 2
                rj.run_job(job, venue=venue, key=f"k-{venue}", environ=env, log=lines.append)
        children = _children(record)
        assert [child["argv"][0] for child in children] == ["kill", "kill"]
        for venue, child in zip(("sfox", "etna"), children, strict=True):
            argv = child["argv"]
            assert "-" not in argv and "--query" not in argv  # from the book alone
            assert argv[argv.index("--venue") + 1] == venue
            assert _scope_flags(argv) == [
                "--from-venues", venue, "--account", "77", "--account", "78",
                "--symbol", "AAPL", "--side", "sell",
            ]  # fmt: skip
            assert [a for a in child["cmdline"] if a][-len(argv) :] == argv  # as ps sees it
            for text in (*argv, *child["cmdline"]):
                assert not any(secret in text for secret in SECRET_VALUES)
        kill = {p.opts[0] for p in cli.commands["kill"].params if p.opts}
        assert set(_scope_flags(children[0]["argv"])[::2]) <= kill

    def test_from_venues_for_some_venues_keeps_the_input_for_all(self, tmp_path: Path) -> None:
        """from_venues naming one of the job's venues: that venue's task lists its book and
        cancels its share of the input too; the other task cancels its share alone."""
        (tmp_path / "orders.csv").write_text("venue,order_id\nsfox,1\netna,2\n")
        job = _job(
            tmp_path,
            '[job]\ncommand = "kill"\nsource = "orders.csv"\nvenues = ["sfox", "etna"]\n'
            'from_venues = ["etna"]\naccount = "77"\n',
        )
        environ = {"BATCHCANCEL_DB": "sqlite:///a.db"}
        sfox = rj.build_invocation(job, venue="sfox", key="K", environ=environ)
        etna = rj.build_invocation(job, venue="etna", key="K", environ=environ)
        assert "-" in sfox.argv and _scope_flags(list(sfox.argv)) == []
        assert "-" in etna.argv
        assert _scope_flags(list(etna.argv)) == ["--from-venues", "etna", "--account", "77"]
        assert etna.stdin == b"venue,order_id\netna,2\n"

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ('from_venues = ["binance"]\n', "from_venues must be"),
            ('from_venues = "yes"\n', "from_venues must be"),
            ("from_venues = []\n", "from_venues must be"),
            ('from_venues = ["sfox"]\n', "give \\[job\\] query"),  # etna has no input
            ("from_venues = false\n", "give \\[job\\] query"),
            ('from_venues = true\nside = "both"\n', "side must be"),
            ('from_venues = true\naccount = [""]\n', "account must be"),
            ("from_venues = true\nsymbol = 7\n", "symbol must be"),
        ],
    )
    def test_job_files_that_cannot_work_are_refused(
        self, tmp_path: Path, text: str, match: str
    ) -> None:
        head = '[job]\ncommand = "kill"\nvenues = ["sfox", "etna"]\n'
        with pytest.raises(rj.JobError, match=match):
            _job(tmp_path, head + text)
        with pytest.raises(rj.JobError, match="narrow from_venues"):
            _job(tmp_path, head + 'source = "o.csv"\naccount = "77"\n')

    def test_a_kill_from_the_books_ends_flat_and_a_book_not_flat_is_retried(
        self, tmp_path: Path
    ) -> None:
        """The shipped kill_switch_books.toml, one task per venue against five books of
        orders no input lists: four tasks succeed with their book flat and nothing left
        working. ETNA cannot be listed without an account id (venues.toml names none yet):
        its task fails retryable (exit 1, book not_flat) and touches nothing; with the
        account configured, the retry (same run key) resumes the run, lists the book and
        ends flat."""
        from tests.test_list_open import ACCOUNT, place_book
        from tests.test_list_open import simulator as book_simulator

        job = rj.load_job(JOBS / "kill_switch_books.toml")
        sims = {name: book_simulator(name) for name in VENUES}
        placed = {name: place_book(sim, name, BOOK_ORDERS) for name, sim in sims.items()}
        command, record = _recorder(tmp_path, "exec")
        lines: list[str] = []
        with serve_in_thread(sims) as server:

            def configure(etna_accounts: list[str]) -> Path:
                config = tmp_path / "venues.toml"
                config.write_text(
                    "".join(
                        f'[venues.{name}]\nbase_url = "{server.url(name)}"\n'
                        + (f"accounts = {json.dumps(etna_accounts)}\n" if name == "etna" else "")
                        + ('symbols = ["BTCUSDT"]\n' if name == "zebpay" else "")
                        for name in VENUES
                    ),
                    encoding="utf-8",
                )
                return config

            env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
            env.update(CREDENTIALS)
            env.update(
                {
                    "BATCHCANCEL_COMMAND": command,
                    "BATCHCANCEL_DB": f"sqlite:///{tmp_path / 'audit.db'}",
                    "BATCHCANCEL_VENUES": str(configure([])),
                }
            )
            summaries = {}
            for venue in VENUES:
                if venue == "etna":
                    with pytest.raises(rj.JobFailed) as failed:
                        rj.run_job(
                            job, venue=venue, key=f"kb:{venue}", environ=env, log=lines.append
                        )
                    assert failed.value.retryable, failed.value
                    assert "not proven flat (etna not_flat)" in str(failed.value)
                    assert failed.value.result is not None and failed.value.result.code == 1
                    assert sorted(sims["etna"].working_keys()) == sorted(placed["etna"])
                    configure([ACCOUNT])  # the fix an operator makes before the retry
                result = rj.run_job(
                    job, venue=venue, key=f"kb:{venue}", environ=env, log=lines.append
                )
                assert result.code == 0 and result.summary is not None
                summaries[venue] = result.summary
        for venue, summary in summaries.items():
            book = summary["books"][venue]
            assert set(summary["books"]) == {venue}  # each task lists its own venue only
            assert (book["verdict"], book["listed"], book["working_at_end"]) == (
                "flat",
                BOOK_ORDERS,
                0,
            ), venue
            assert sims[venue].working_keys() == [], venue
            assert summary["orders"] == BOOK_ORDERS
        children = _children(record)
        assert len(children) == len(VENUES) + 1  # ETNA twice
        for child in children:
            argv = child["argv"]
            venue = argv[argv.index("--venue") + 1]
            assert _scope_flags(argv) == ["--from-venues", venue]
            assert "-" not in argv and "--query" not in argv
        for text in (*lines, *(a for c in children for a in (*c["argv"], *c["cmdline"]))):
            assert not any(secret in text for secret in SECRET_VALUES)
        sessions = dict(_audit(tmp_path, "select run_key, sessions from runs"))
        assert sessions == {f"kb:{v}": 2 if v == "etna" else 1 for v in VENUES}
        lists = dict(
            _audit(
                tmp_path, "select venue, count(*) from requests where kind = 'list' group by venue"
            )
        )
        assert set(lists) == set(VENUES)  # ETNA listed only once it could be

        from batchcancel.audit.store import AuditStore
        from batchcancel.kill_report import kill_report

        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        try:
            report = json.loads(kill_report(store, store.find_run("kb:etna").id, as_json=True))
        finally:
            store.close()
        assert report["venues"]["etna"]["verdict"] == "flat"
        assert report["why"] == job.reason
        assert len(report["sessions"]) == 2


# -- what a trigger or a connection may not do ----------------------------------------------

# A stand-in for the child's command: it records its argv (and /proc's view of it, what `ps`
# shows) and the database variables it was given, then either runs the real CLI with the same
# arguments ("exec") or exits 2 ("stop": for runs that must never reach a venue).
RECORDER = """
import json, os, sys
record, then = sys.argv[1], sys.argv[2]
with open(f"/proc/{os.getpid()}/cmdline", "rb") as proc:
    cmdline = proc.read().decode().split("\\0")
with open(record, "a", encoding="utf-8") as out:
    out.write(json.dumps({
        "argv": sys.argv[3:],
        "cmdline": cmdline,
        "source_db": os.environ.get("BATCHCANCEL_SOURCE_DB"),
        "db": os.environ.get("BATCHCANCEL_DB"),
    }) + "\\n")
if then == "exec":
    os.execv(sys.executable, [sys.executable, "-m", "batchcancel", *sys.argv[3:]])
sys.exit(2)
"""


def _recorder(tmp_path: Path, then: str) -> tuple[str, Path]:
    """A BATCHCANCEL_COMMAND value that records each child, and the file it records to."""
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "children.jsonl"
    return shlex.join([sys.executable, str(script), str(record), then]), record


def _children(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


PASSWORD = "desk-PASSWORD-e91c"


def _with_password(url: str) -> str:
    # tests/pg.py trusts loopback connections, so a password in the URL is carried, not checked
    user, at, rest = url.partition("@")
    assert at and ":" not in user.split("//", 1)[1], url
    return f"{user}:{PASSWORD}@{rest}"


class TestSecretsOffTheCommandLine:
    def test_child_argv_holds_no_database_password(
        self, tmp_path: Path, postgres: PostgresServer | None
    ) -> None:
        """A real run of a query job: the desk database and the audit database are PostgreSQL
        URLs with a password. The child batchcancel process cancels every order, and neither
        password is on its command line (its argv, /proc/<pid>/cmdline) nor in the runner's
        log: both URLs reached it through its environment."""
        desk_url = _with_password(postgres_database(postgres))
        audit_url = _with_password(postgres_database(postgres))
        import sqlalchemy as sa

        ids = [str(810000 + n) for n in range(5)]
        engine = sa.create_engine(desk_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("create table open_orders (venue text, order_id text)")
                for order_id in ids:
                    conn.exec_driver_sql(f"insert into open_orders values ('sfox', '{order_id}')")
        finally:
            engine.dispose()
        simulator = SIMULATORS["sfox"](credentials=CREDENTIALS, rate_limit=100, period=1.0)
        simulator.seed({order_id: OrderState.OPEN for order_id in ids})
        command, record = _recorder(tmp_path, "exec")
        job = _job(
            tmp_path,
            '[job]\ncommand = "run"\nquery = "select venue, order_id from open_orders"\n'
            'source_db_env = "DESK_DB_URL"\nvenues = ["sfox"]\nmax_attempts = 2\n',
        )
        lines: list[str] = []
        with serve_in_thread({"sfox": simulator}) as server:
            config = tmp_path / "venues.toml"
            config.write_text(f'[venues.sfox]\nbase_url = "{server.url("sfox")}"\n')
            env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
            env.update(CREDENTIALS)
            env.update(
                {
                    "BATCHCANCEL_COMMAND": command,
                    "BATCHCANCEL_DB": audit_url,
                    "BATCHCANCEL_VENUES": str(config),
                    "DESK_DB_URL": desk_url,
                }
            )
            result = rj.run_job(
                job, venue="sfox", key="secret-argv", environ=env, log=lines.append, timeout=120
            )
        assert result.code == 0 and result.summary is not None
        assert result.summary["outcomes"]["canceled"] == len(ids)
        assert dict(simulator.requests) == dict.fromkeys(ids, 1)
        [child] = _children(record)
        for text in (*child["argv"], *child["cmdline"], *result.invocation.argv, *lines):
            assert PASSWORD not in text
        assert not any(arg.startswith(("--source-db", "--db")) for arg in child["argv"])
        assert child["source_db"] == desk_url and child["db"] == audit_url  # via environment


CONN_JOB = """
[job]
command = "run"
source = "orders.csv"
venues = ["sfox"]
max_attempts = 1

[airflow]
dag_id = "batchcancel_conn"
retries = 2
retry_delay = 1
"""


class TestConnectionExtras:
    def test_a_connection_cannot_set_the_command(
        self, tmp_path: Path, airflow_venv: Path, airflow_home: Path
    ) -> None:
        """A connection `batchcancel_sfox` whose extra holds, next to sFOX's key,
        BATCHCANCEL_COMMAND (a command that leaves a marker file): `airflow dags test` fails
        the task with a message naming the key, without a retry (the connection must be
        fixed); the command never runs and nothing reaches the venue."""
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        (jobs / "conn.toml").write_text(CONN_JOB, encoding="utf-8")
        (jobs / "orders.csv").write_text("venue,order_id\nsfox,820001\n", encoding="utf-8")
        marker = tmp_path / "the-connection-ran-this"
        simulator = SIMULATORS["sfox"](credentials=CREDENTIALS, rate_limit=100, period=1.0)
        simulator.seed({"820001": OrderState.OPEN})
        with serve_in_thread({"sfox": simulator}) as server:
            config = tmp_path / "venues.toml"
            config.write_text(f'[venues.sfox]\nbase_url = "{server.url("sfox")}"\n')
            extra = {
                "BATCHCANCEL_SFOX_API_KEY": CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"],
                "BATCHCANCEL_COMMAND": shlex.join(["sh", "-c", f"touch {marker}"]),
            }
            env = {
                "AIRFLOW_CONN_BATCHCANCEL_SFOX": json.dumps(
                    {"conn_type": "generic", "extra": extra}
                ),
                "BATCHCANCEL_JOBS_DIR": str(jobs),
                "BATCHCANCEL_DB": f"sqlite:///{tmp_path / 'audit.db'}",
                "BATCHCANCEL_VENUES": str(config),
            }
            done = _airflow(
                airflow_venv,
                airflow_home,
                ["airflow", "dags", "test", "batchcancel_conn", "2025-06-04T10:00:00+00:00"],
                env,
            )
        output = done.stdout + done.stderr
        assert not marker.exists(), "a connection's extra chose the command a worker ran"
        assert done.returncode != 0, output[-5000:]
        assert "BATCHCANCEL_COMMAND" in output and "not a credential" in output, output[-5000:]
        assert CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"] not in output
        assert dict(simulator.requests) == {}
        assert not (tmp_path / "audit.db").exists()  # batchcancel never started
        with contextlib.closing(sqlite3.connect(airflow_home / "airflow.db")) as conn:
            tries = list(
                conn.execute(
                    "select state, try_number from task_instance where dag_id = ?",
                    ("batchcancel_conn",),
                )
            )
        assert tries == [("failed", 1)]  # refused for good: a retry cannot fix a connection

    @pytest.mark.parametrize(
        "key",
        [
            "BATCHCANCEL_COMMAND",  # runs any command
            "BATCHCANCEL_DB",  # another audit database: a resume that is not one
            "BATCHCANCEL_SOURCE_DB",  # another order database
            "BATCHCANCEL_VENUES",  # another venues config: credentials to another host
            "BATCHCANCEL_DEBUG",
            "BATCHCANCEL_TANX_JWT",  # another venue's credential
            "batchcancel_sfox_api_key",  # not the variable's name
            "PATH",
            "LD_PRELOAD",
            "PYTHONPATH",
        ],
    )
    def test_only_the_venues_credential_variables_are_taken(self, key: str) -> None:
        """The runner's check behind the DAG: a connection's extra for sFOX may hold sFOX's
        credential variables only; any other key refuses the whole connection."""
        ok = {"BATCHCANCEL_SFOX_API_KEY": "k"}
        assert rj.connection_credentials(ok, venue="sfox") == ok
        with pytest.raises(rj.JobError, match=f"{key}.*not a credential") as refused:
            rj.connection_credentials({**ok, key: "value"}, venue="sfox")
        assert "value" not in str(refused.value) and "'k'" not in str(refused.value)
        with pytest.raises(rj.JobError, match="must be a string"):
            rj.connection_credentials({"BATCHCANCEL_SFOX_API_KEY": 12}, venue="sfox")


SOURCE_JOB = """
[job]
command = "kill"
query = "select venue, order_id from open_orders"
source_db_env = "DESK_DB_URL"
venues = ["sfox"]
"""


class TestTriggerTimeSource:
    def _tree(self, tmp_path: Path) -> tuple[Path, Path, Path]:
        """jobs/drop (the source_dir) with one order list, a file outside it, and symlinks
        from inside the folder to outside (a file and a directory)."""
        drop = tmp_path / "jobs" / "drop"
        drop.mkdir(parents=True)
        (drop / "today.csv").write_text("venue,order_id\nsfox,1\n", encoding="utf-8")
        outside = tmp_path / "outside"
        outside.mkdir()
        secret = outside / "secret.csv"
        secret.write_text("venue,order_id\nsfox,666\n", encoding="utf-8")
        (drop / "link.csv").symlink_to(secret)
        (drop / "elsewhere").symlink_to(outside, target_is_directory=True)
        return drop, outside, secret

    def _refused(self, job: Any, source: str, tmp_path: Path, match: str) -> None:
        """run_job refuses `source` and starts no process."""
        command, record = _recorder(tmp_path, "stop")
        env = {"BATCHCANCEL_DB": "sqlite:///unused.db", "DESK_DB_URL": "sqlite:///unused.db"}
        env["BATCHCANCEL_COMMAND"] = command
        with pytest.raises(rj.JobError, match=match):
            lines: list[str] = []
            rj.run_job(job, venue="sfox", key="k", environ=env, source=source, log=lines.append)
        assert _children(record) == []

    def test_source_outside_the_source_dir_is_refused(self, tmp_path: Path) -> None:
        """With `source_dir = "drop"`, a trigger-time source must resolve inside it: an
        absolute path elsewhere, a `..` path, a symlinked file or folder that leads out are
        refused and nothing is run; a name or an absolute path inside is taken."""
        drop, _, secret = self._tree(tmp_path)
        job = rj.load_job(
            _write(tmp_path / "jobs" / "kill.toml", SOURCE_JOB + 'source_dir = "drop"\n')
        )
        assert job.source_dir == drop
        for source in (
            str(secret),
            "../../outside/secret.csv",
            str(drop / ".." / ".." / "outside" / "secret.csv"),
            "link.csv",
            "elsewhere/secret.csv",
            str(drop / "elsewhere" / "secret.csv"),
            "/etc/passwd",
        ):
            self._refused(job, source, tmp_path, "outside the job's source_dir")
        environ = {"BATCHCANCEL_DB": "sqlite:///a.db"}
        for source in ("today.csv", str(drop / "today.csv"), "./sub/../today.csv"):
            invocation = rj.build_invocation(
                job, venue="sfox", key="k", environ=environ, source=source
            )
            assert invocation.stdin == b"venue,order_id\nsfox,1\n"
            assert "-" in invocation.argv and "--query" not in invocation.argv

    def test_source_needs_a_source_dir(self, tmp_path: Path) -> None:
        """A job file that names no source_dir takes no order list at trigger time: the
        runner refuses it, whatever the path, and runs nothing."""
        drop, _, secret = self._tree(tmp_path)
        job = rj.load_job(_write(tmp_path / "jobs" / "kill.toml", SOURCE_JOB))
        for source in (str(secret), str(drop / "today.csv")):
            self._refused(job, source, tmp_path, "source_dir")
        with pytest.raises(rj.JobError, match="source_dir must be"):
            rj.load_job(_write(tmp_path / "jobs" / "bad.toml", SOURCE_JOB + "source_dir = 1\n"))

    def test_runner_command_line_refuses_it_too(self, tmp_path: Path) -> None:
        """`python jobs/run_job.py JOB --source X` goes through the same check: exit 2."""
        _, _, secret = self._tree(tmp_path)
        path = _write(tmp_path / "jobs" / "kill.toml", SOURCE_JOB + 'source_dir = "drop"\n')
        command, record = _recorder(tmp_path, "stop")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
        env.update({"BATCHCANCEL_DB": "sqlite:///unused.db", "BATCHCANCEL_COMMAND": command})
        done = subprocess.run(
            [sys.executable, str(JOBS / "run_job.py"), str(path), "--venue", "sfox",
             "--run-key", "k", "--source", str(secret)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "outside the job's source_dir" in done.stderr
        assert _children(record) == []


class TestRunnerScript:
    def test_runs_where_batchcancel_is_not_installed(self, tmp_path: Path) -> None:
        """`python jobs/run_job.py` in a Python that cannot see batchcancel's installation
        (isolated, no site-packages) takes the runner from its checkout, standard library
        only: it reads the job and refuses it for the missing audit database, exit 2."""
        path = _write(tmp_path / "jobs" / "kill.toml", SOURCE_JOB)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(JOBS / "run_job.py"), str(path), "--venue", "sfox",
             "--run-key", "k"],
            capture_output=True, text=True, env=env, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "BATCHCANCEL_DB is not set" in done.stderr

    def test_entry_point_is_the_package_runner(self) -> None:
        """jobs/run_job.py re-exports batchcancel.jobs: one runner, not a copy of it."""
        spec = importlib.util.spec_from_file_location("run_job_script", JOBS / "run_job.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in rj.__all__:
            assert getattr(module, name) is getattr(rj, name), name
        assert len((JOBS / "run_job.py").read_text(encoding="utf-8").splitlines()) < 80


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
