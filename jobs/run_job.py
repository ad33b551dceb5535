"""Run one venue's share of a batchcancel job file: the runner behind the Airflow DAG.

A job file (TOML, see eod_cleanup.toml) says what to cancel and how; this module turns it into
one `batchcancel run|kill --venue V --run-key K --json` process per venue, waits for it (always
with a bound), and says what its exit code means for a scheduler:

    0  every order canceled, cancel_pending or already_closed        -> success
    1  finished, some orders need attention:
         some still resumable (failed, skipped)                      -> JobFailed(retryable)
         all of them final (not_found, rejected, invalid)            -> JobFailed(not retryable)
    2  usage or input error, nothing sent                            -> JobFailed(not retryable)
    3  stopped early (deadline, SIGTERM), resumable orders left      -> JobFailed(retryable)
    other (crash, signal, no JSON summary)                           -> JobFailed(retryable)

A retry passes the same run key, so batchcancel resumes the same run: orders that already have
a final outcome are never sent again. Database URLs reach batchcancel through its environment
(BATCHCANCEL_DB, BATCHCANCEL_SOURCE_DB), never its command line, which `ps` shows to anyone.

The module uses the standard library only, so it runs in the Airflow worker's Python whether or
not batchcancel is installed there (BATCHCANCEL_COMMAND names another installation); only
checking an Airflow connection's credential names imports batchcancel's venue registry. It is
a command of its own for cron or a shell:

    python jobs/run_job.py jobs/eod_cleanup.toml --venue sfox --run-key eod:2025-01-02:sfox
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "AirflowOptions",
    "Invocation",
    "Job",
    "JobError",
    "JobFailed",
    "JobResult",
    "build_invocation",
    "classify",
    "connection_credentials",
    "load_job",
    "load_jobs",
    "run_job",
    "run_key",
    "trigger_source",
]

COMMAND_VAR: Final = "BATCHCANCEL_COMMAND"  # how to start batchcancel; default: this Python
DB_VAR: Final = "BATCHCANCEL_DB"
SOURCE_DB_VAR: Final = "BATCHCANCEL_SOURCE_DB"  # batchcancel's --source-db, from the environment
VENUES_VAR: Final = "BATCHCANCEL_VENUES"
KNOWN_VENUES: Final = ("sfox", "etna", "crux", "tanx", "zebpay")
RESUMABLE: Final = ("failed", "skipped")
MAX_RUN_KEY: Final = 255  # the audit database's runs.run_key column
TERM_GRACE: Final = 30.0  # seconds from SIGTERM to SIGKILL when the runner stops batchcancel
CONFIRM_TIMEOUT: Final = 60.0  # batchcancel's default --confirm-timeout
_VENUE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_PASSWORD: Final = re.compile(r"(://[^/\s:@]*:)[^\s@]*@")

_JOB_KEYS: Final = frozenset(
    {
        "command",
        "description",
        "venues",
        "query",
        "source_db_env",
        "source",
        "source_dir",
        "venues_config",
        "reason",
        "deadline",
        "max_attempts",
        "confirm",
        "bulk",
        "all_open",
        "connection_id",
    }
)
_AIRFLOW_KEYS: Final = frozenset(
    {"dag_id", "schedule", "retries", "retry_delay", "execution_timeout", "tags", "start_date"}
)


class JobError(Exception):
    """The job file (or the environment it needs) is unusable: nothing was started."""


class JobFailed(Exception):
    """batchcancel ended without success; `retryable` says whether a retry can change that."""

    def __init__(self, message: str, *, retryable: bool, result: JobResult | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.result = result


@dataclass(frozen=True, slots=True)
class AirflowOptions:
    """How the DAG for a job is scheduled: the job file's [airflow] table."""

    dag_id: str
    schedule: str | None
    retries: int
    retry_delay: float  # seconds
    execution_timeout: float | None  # seconds; None: derived from the deadline
    tags: tuple[str, ...]
    start_date: str  # ISO date


@dataclass(frozen=True, slots=True)
class Job:
    """One job file: what to cancel, with which batchcancel options, on which venues."""

    name: str
    path: Path
    command: str  # "run" or "kill"
    venues: tuple[str, ...]
    description: str = ""
    query: str | None = None
    source_db_env: str | None = None
    source: Path | None = None  # a CSV file, instead of query
    source_dir: Path | None = None  # where a trigger-time CSV must be; None: none is taken
    venues_config: Path | None = None
    reason: str = ""
    deadline: float | None = None
    max_attempts: int | None = None
    confirm: bool = False
    bulk: bool = False
    all_open: bool = False  # cancel-all endpoints: every open order of the account, listed or not
    connection_id: str = "batchcancel_{venue}"
    airflow: AirflowOptions = field(
        default_factory=lambda: AirflowOptions("", None, 0, 60.0, None, (), "2025-01-01")
    )

    def wait_bound(self) -> float:
        """How long one batchcancel process may take before the runner stops it."""
        deadline = self.deadline if self.deadline is not None else 3600.0
        return deadline + (CONFIRM_TIMEOUT if self.confirm else 0.0) + 120.0


@dataclass(frozen=True, slots=True)
class Invocation:
    """A batchcancel command line, its standard input and environment, and what may be logged
    of it."""

    argv: tuple[str, ...]
    stdin: bytes | None
    shown: str  # the command line with passwords in URLs hidden
    env: Mapping[str, str] = field(repr=False)  # the child's whole environment: secrets
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished batchcancel process."""

    code: int
    summary: dict[str, Any] | None  # the --json summary, when it printed one
    invocation: Invocation


# -- job files ------------------------------------------------------------------------------


def load_job(path: str | Path) -> Job:
    """Read and check a job file; JobError says what is wrong."""
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobError(f"job file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    where = f"job file {path}"
    unknown_top = set(data) - {"job", "airflow"}
    if unknown_top:
        raise JobError(
            f"{where}: unknown table(s) {sorted(unknown_top)}; expected [job], [airflow]"
        )
    job = data.get("job")
    if not isinstance(job, dict):
        raise JobError(f"{where}: no [job] table")
    _no_unknown(job, _JOB_KEYS, f"{where} [job]")
    command = job.get("command")
    if command not in ("run", "kill"):
        raise JobError(f'{where}: [job] command must be "run" or "kill", got {command!r}')
    venues = job.get("venues")
    if not isinstance(venues, list) or not venues:
        raise JobError(f"{where}: [job] venues must be a non-empty list of venue names")
    for venue in venues:
        if not isinstance(venue, str) or venue not in KNOWN_VENUES:
            raise JobError(f"{where}: unknown venue {venue!r}; known: {', '.join(KNOWN_VENUES)}")
    if len(set(venues)) != len(venues):
        raise JobError(f"{where}: [job] venues lists a venue twice")
    query, source = job.get("query"), job.get("source")
    if (query is None) == (source is None):
        raise JobError(f"{where}: give [job] query (with source_db_env) or source, not both")
    source_db_env = job.get("source_db_env")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise JobError(f"{where}: [job] query must be SQL text")
        if not isinstance(source_db_env, str) or not _ENV_NAME.match(source_db_env):
            raise JobError(
                f"{where}: [job] query needs source_db_env, the name of the environment variable "
                "holding the database URL (never the URL itself: it carries a password)"
            )
    if source is not None and not isinstance(source, str):
        raise JobError(f"{where}: [job] source must be a CSV path")
    source_dir = job.get("source_dir")
    if source_dir is not None and not isinstance(source_dir, str):
        raise JobError(f"{where}: [job] source_dir must be a path (a folder)")
    venues_config = job.get("venues_config")
    if venues_config is not None and not isinstance(venues_config, str):
        raise JobError(f"{where}: [job] venues_config must be a path")
    deadline = _number(job, "deadline", where, positive=True)
    max_attempts = _number(job, "max_attempts", where, positive=True, whole=True)
    connection_id = job.get("connection_id", "batchcancel_{venue}")
    if not isinstance(connection_id, str):
        raise JobError(f"{where}: [job] connection_id must be a string")
    for key in ("confirm", "bulk", "all_open"):
        if not isinstance(job.get(key, False), bool):
            raise JobError(f"{where}: [job] {key} must be true or false")
    for key in ("reason", "description"):
        if not isinstance(job.get(key, ""), str):
            raise JobError(f"{where}: [job] {key} must be a string")
    here = path.parent
    return Job(
        name=path.stem,
        path=path,
        command=command,
        venues=tuple(venues),
        description=job.get("description", ""),
        query=query,
        source_db_env=source_db_env if query is not None else None,
        source=(here / source) if source is not None else None,
        source_dir=(here / source_dir) if source_dir is not None else None,
        venues_config=(here / venues_config) if venues_config is not None else None,
        reason=job.get("reason", ""),
        deadline=deadline,
        max_attempts=int(max_attempts) if max_attempts is not None else None,
        confirm=job.get("confirm", False),
        bulk=job.get("bulk", False),
        all_open=job.get("all_open", False),
        connection_id=connection_id,
        airflow=_airflow_options(data.get("airflow", {}), path),
    )


def load_jobs(folder: str | Path) -> tuple[list[Job], dict[Path, str]]:
    """Every job file (a TOML file with a [job] table) in `folder`, and the broken ones' errors."""
    jobs: list[Job] = []
    errors: dict[Path, str] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            with path.open("rb") as handle:
                if "job" not in tomllib.load(handle):
                    continue  # a venues config, or another file that is no job
            jobs.append(load_job(path))
        except (OSError, tomllib.TOMLDecodeError, JobError) as exc:
            errors[path] = str(exc)
    return jobs, errors


def _no_unknown(table: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise JobError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")


def _number(
    table: Mapping[str, object], key: str, where: str, *, positive: bool, whole: bool = False
) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobError(f"{where}: {key} must be a number, got {value!r}")
    if whole and not float(value).is_integer():
        raise JobError(f"{where}: {key} must be a whole number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise JobError(f"{where}: {key} must be positive, got {value!r}")
    return float(value)


def _airflow_options(table: object, path: Path) -> AirflowOptions:
    where = f"job file {path} [airflow]"
    if not isinstance(table, dict):
        raise JobError(f"{where} must be a table")
    _no_unknown(table, _AIRFLOW_KEYS, where)
    dag_id = table.get("dag_id", f"batchcancel_{path.stem}")
    if not isinstance(dag_id, str) or not re.match(r"^[A-Za-z0-9_.-]{1,200}$", dag_id):
        raise JobError(f"{where}: dag_id must be letters, digits, _ . - (got {dag_id!r})")
    schedule = table.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise JobError(f"{where}: schedule must be a cron expression or preset string")
    tags = table.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise JobError(f"{where}: tags must be a list of strings")
    start_date = table.get("start_date", "2025-01-01")
    if not isinstance(start_date, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", start_date):
        raise JobError(f"{where}: start_date must be a YYYY-MM-DD string")
    retries = _number(table, "retries", where, positive=False, whole=True)
    retry_delay = _number(table, "retry_delay", where, positive=True)
    execution_timeout = _number(table, "execution_timeout", where, positive=True)
    return AirflowOptions(
        dag_id=dag_id,
        schedule=schedule,
        retries=int(retries) if retries is not None else 0,
        retry_delay=retry_delay if retry_delay is not None else 60.0,
        execution_timeout=execution_timeout,
        tags=tuple(tags),
        start_date=start_date,
    )


# -- run keys and command lines -------------------------------------------------------------


def run_key(dag_id: str, run_id: str, map_index: int, venue: str) -> str:
    """The batchcancel run key of one mapped task of one DAG run.

    dag id + run id + map index identify the task instance, and stay the same across its
    retries; the venue is added so that a run key can never resume another venue's run, even
    if a changed job file maps the venues to other indexes. Keys longer than the audit column
    keep a readable head and end in a digest of the whole key.
    """
    key = f"{dag_id}:{run_id}:{map_index}:{venue}"
    if len(key) <= MAX_RUN_KEY:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"{key[: MAX_RUN_KEY - len(digest) - 1]}~{digest}"


def build_invocation(
    job: Job,
    *,
    venue: str,
    key: str,
    environ: Mapping[str, str],
    source: str | Path | None = None,
    reason: str | None = None,
) -> Invocation:
    """The batchcancel command for one venue of `job`. `source` (a CSV path inside the job's
    source_dir) and `reason` override the job file's for this run, e.g. from a manually
    triggered kill switch. `environ` is the worker's environment; the child gets it, plus the
    source database URL, which never goes on its command line."""
    if venue not in job.venues:
        raise JobError(f"venue {venue!r} is not one of job {job.name}'s venues {list(job.venues)}")
    if not environ.get(DB_VAR):
        raise JobError(
            f"{DB_VAR} is not set: a scheduled job needs a durable audit database that every "
            "retry reaches (PostgreSQL for workers on several machines), so that a retry resumes"
        )
    if reason is not None and not isinstance(reason, str):
        raise JobError(f"the reason must be text, got {type(reason).__name__}")
    warnings: list[str] = []
    env = dict(environ)
    env.pop(SOURCE_DB_VAR, None)  # set below when the job reads a database, from its own variable
    base = shlex.split(environ[COMMAND_VAR]) if environ.get(COMMAND_VAR) else None
    argv: list[str] = base or [sys.executable, "-m", "batchcancel"]
    argv.append(job.command)
    stdin: bytes | None = None
    csv_path = trigger_source(job, source) if source is not None else job.source
    if csv_path is not None:
        argv.append("-")
        stdin, blank = split_csv(csv_path, venue=venue, venues=job.venues)
        if blank:
            warnings.append(f"{blank} rows of {csv_path} name no venue: no task sends them")
    else:
        assert job.query is not None and job.source_db_env is not None
        url = environ.get(job.source_db_env)
        if not url:
            raise JobError(f"{job.source_db_env} is not set: job {job.name} reads its orders there")
        argv += ["--query", venue_query(job.query, venue=venue, venues=job.venues)]
        env[SOURCE_DB_VAR] = url  # not --source-db: argv is world-readable (ps, /proc)
    argv += ["--venue", venue, "--run-key", key, "--json"]
    if job.venues_config is not None and not environ.get(VENUES_VAR):
        argv += ["--venues-config", str(job.venues_config)]
    why = reason if reason is not None else job.reason
    if why:
        argv += ["--reason", why]
    if job.deadline is not None:
        argv += ["--deadline", f"{job.deadline:g}"]
    if job.max_attempts is not None:
        argv += ["--max-attempts", str(job.max_attempts)]
    if job.bulk:
        argv.append("--bulk")
    if job.all_open:
        argv.append("--all-open")
    if job.confirm:
        argv.append("--confirm")
    shown = _URL_PASSWORD.sub(r"\1***@", shlex.join(argv))
    return Invocation(tuple(argv), stdin, shown, env, tuple(warnings))


def trigger_source(job: Job, source: object) -> Path:
    """A trigger-time order list, resolved (symlinks, `..`); it must lie inside the job's
    source_dir, where a relative path is taken from. Anything else is refused: a trigger's
    conf must not make a worker read whichever file it can."""
    if job.source_dir is None:
        raise JobError(
            f"job {job.name} takes no order list when triggered: its job file sets no "
            "[job] source_dir, the folder such lists must be in"
        )
    if not isinstance(source, str | Path) or not str(source).strip():
        raise JobError(f"the order list must be a path, got {source!r}")
    try:
        folder = job.source_dir.resolve(strict=True)
        path = (folder / source).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise JobError(f"order list {str(source)!r} cannot be resolved: {exc}") from None
    if not folder.is_dir() or path == folder or not path.is_relative_to(folder):
        raise JobError(
            f"order list {str(source)!r} is outside the job's source_dir {folder}: refused, "
            "nothing was run"
        )
    return path


def connection_credentials(
    extra: object, *, venue: str, where: str = "the Airflow connection"
) -> dict[str, str]:
    """The variables an Airflow connection's extra gives one venue's batchcancel process.

    Only that venue's credential variables may come from a connection. Everything else in the
    child's environment decides what runs or where (BATCHCANCEL_COMMAND, the databases, the
    venues config, PATH) and stays the worker's own; any other key refuses the connection."""
    if not isinstance(extra, Mapping):
        raise JobError(f"{where}: its extra must be a JSON object of credential variables")
    try:  # batchcancel's own list (stdlib-only modules), not a copy of it
        from batchcancel.venues import VENUES
    except ImportError:
        raise JobError(
            f"{where}: credentials from a connection need batchcancel importable in the "
            "worker's Python, which knows each venue's credential variables; install it "
            "there, or give the credentials in the worker's environment"
        ) from None
    allowed = VENUES[venue].credential_vars if venue in VENUES else ()
    other = sorted(str(key) for key in extra if key not in allowed)
    if other:
        raise JobError(
            f"{where}: {', '.join(map(repr, other))} {'is' if len(other) == 1 else 'are'} "
            f"not a credential variable of venue {venue} (allowed: "
            f"{', '.join(allowed) or 'none'}); nothing was run"
        )
    found: dict[str, str] = {}
    for key, value in extra.items():
        if not isinstance(value, str):
            raise JobError(f"{where}: {key} must be a string")
        if value:
            found[key] = value
    return found


def venue_query(query: str, *, venue: str, venues: Sequence[str]) -> str:
    """`query` narrowed to one venue's rows, in the database.

    Rows naming a venue that is not in the job's list go to the first venue's task, where
    `--venue` records them `invalid` (never sent) and the task reports them for attention,
    instead of no task seeing them at all.
    """
    _check_venue_names(venue, venues)
    inner = query.strip().rstrip(";").strip()
    column = "lower(trim(batchcancel_source.venue))"
    condition = f"{column} = '{venue}'"
    if venue == venues[0]:
        listed = ", ".join(f"'{v}'" for v in venues)
        condition = f"({condition} or ({column} <> '' and {column} not in ({listed})))"
    return f"select * from (\n{inner}\n) as batchcancel_source\nwhere {condition}"


def split_csv(path: Path, *, venue: str, venues: Sequence[str]) -> tuple[bytes, int]:
    """The CSV's header and the rows for `venue` (plus, for the first venue, rows for venues
    not in the job, as in venue_query), fields untouched; and how many rows name no venue
    (`--venue` would fill in its own name, so no task can take them)."""
    _check_venue_names(venue, venues)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise JobError(f"order list {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise JobError(f"order list {path} is not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise JobError(f"order list {path} is empty")
    names = [name.strip().lower() for name in header]
    if "venue" not in names:
        if len(venues) == 1:
            return text.encode("utf-8"), 0  # --venue fills the column
        raise JobError(f"order list {path} has no venue column, and job has several venues")
    column = names.index("venue")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    blank = 0
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        named = row[column].strip().lower() if column < len(row) else ""
        blank += named == ""
        stray = named != "" and named not in venues
        if named == venue or (stray and venue == venues[0]):
            writer.writerow(row)
    return out.getvalue().encode("utf-8"), blank


def _check_venue_names(venue: str, venues: Sequence[str]) -> None:
    # Names end up inside SQL text: only plain lower-case names are ever allowed there.
    for name in (venue, *venues):
        if not _VENUE_NAME.match(name):
            raise JobError(f"venue name {name!r} is not a plain lower-case name")


# -- running --------------------------------------------------------------------------------


def classify(code: int, summary: Mapping[str, Any] | None) -> tuple[bool, bool, str]:
    """(succeeded, retryable, message) for a batchcancel exit code and its --json summary."""
    counts = ""
    if summary is not None:
        outcomes = {k: v for k, v in (summary.get("outcomes") or {}).items() if v}
        counts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "no orders"
        counts = f" (run {summary.get('run_id')}: {counts})"
    if code == 0:
        return True, False, f"succeeded{counts}"
    if code == 1:
        if summary is None:
            return False, True, "batchcancel failed without a summary (exit 1); see its log"
        outcomes = summary.get("outcomes") or {}
        resumable = sum(int(outcomes.get(o, 0) or 0) for o in RESUMABLE)
        # orders without any outcome yet (never answered) are resumable too
        resumable += max(0, int(summary.get("orders") or 0) - sum(map(int, outcomes.values())))
        if resumable or summary.get("status") != "attention":
            return False, True, f"{resumable} orders still resumable; a retry resumes{counts}"
        return False, False, f"orders need attention; all final, a retry cannot help{counts}"
    if code == 2:
        return False, False, "usage or input error: nothing sent; fix the job or its input"
    if code == 3:
        return False, True, f"stopped early with resumable orders left; a retry resumes{counts}"
    if code < 0:
        return False, True, f"batchcancel was killed by signal {-code}; a retry resumes"
    return False, True, f"batchcancel exited {code}; a retry resumes"


def run_job(
    job: Job,
    *,
    venue: str,
    key: str,
    environ: Mapping[str, str] | None = None,
    source: str | Path | None = None,
    reason: str | None = None,
    log: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> JobResult:
    """Run batchcancel for one venue of `job`; return on success, raise JobFailed otherwise."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    invocation = build_invocation(
        job,
        venue=venue,
        key=key,
        environ=os.environ if environ is None else environ,
        source=source,
        reason=reason,
    )
    say(f"batchcancel job {job.name}, venue {venue}, run key {key}: {invocation.shown}")
    for warning in invocation.warnings:
        say(f"WARNING: {warning}")
    code, stdout = _execute(invocation, say, timeout or job.wait_bound())
    summary = _summary(stdout)
    result = JobResult(code, summary, invocation)
    if summary is not None:
        say(f"batchcancel summary: {json.dumps(summary, sort_keys=True)}")
    succeeded, retryable, message = classify(code, summary)
    if not succeeded:
        raise JobFailed(f"venue {venue}: {message}", retryable=retryable, result=result)
    say(f"venue {venue}: {message}")
    return result


def _execute(invocation: Invocation, say: Callable[[str], None], bound: float) -> tuple[int, str]:
    """Run the process with its stderr relayed line by line; stop it if it outlives `bound`,
    or if this process is being stopped (SIGTERM to it first, so it records what it sent)."""
    process = subprocess.Popen(
        invocation.argv,
        stdin=subprocess.PIPE if invocation.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(invocation.env),
    )
    chunks: list[bytes] = []
    assert process.stdout is not None and process.stderr is not None
    out_pipe, err_pipe = process.stdout, process.stderr

    def relay() -> None:
        for raw in iter(err_pipe.readline, b""):
            say(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def collect() -> None:
        chunks.append(out_pipe.read())

    threads = [
        threading.Thread(target=relay, daemon=True),
        threading.Thread(target=collect, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        if invocation.stdin is not None and process.stdin is not None:
            try:
                process.stdin.write(invocation.stdin)
            except BrokenPipeError:
                pass  # it exited early (e.g. a usage error): its exit code says why
            finally:
                process.stdin.close()
        try:
            code = process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            say(f"batchcancel still running after {bound:g} s: stopping it (SIGTERM)")
            _stop(process)
            raise JobFailed(
                f"batchcancel did not finish within {bound:g} s; a retry resumes", retryable=True
            ) from None
    except BaseException:
        _stop(process)  # the task is being stopped: let batchcancel record and exit
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
        for pipe in (out_pipe, err_pipe):
            pipe.close()
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _summary(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "run_id" in data:
            return data
    return None


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python jobs/run_job.py JOB --venue V --run-key K`: exit code as batchcancel's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("job", help="job file (TOML)")
    parser.add_argument("--venue", required=True)
    parser.add_argument("--run-key", required=True)
    parser.add_argument(
        "--source", help="CSV order list instead of the job's source (inside its source_dir)"
    )
    parser.add_argument("--reason")
    args = parser.parse_args(argv)
    try:
        job = load_job(args.job)
        result = run_job(
            job, venue=args.venue, key=args.run_key, source=args.source, reason=args.reason
        )
    except JobError as exc:
        print(f"run_job: error: {exc}", file=sys.stderr)
        return 2
    except JobFailed as exc:
        print(f"run_job: {exc}", file=sys.stderr)
        return exc.result.code if exc.result is not None and exc.result.code > 0 else 3
    if result.summary is not None:
        print(json.dumps(result.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
