"""Job files: read and check a job's TOML ([job] what batchcancel does, [airflow] its DAG).

Nothing here starts a process or reads the environment. Standard library only, with the
package's stdlib-only contract (batchcancel.contract, the venue registry): it runs in a
scheduler's Python (tests/test_layering.py).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from batchcancel.contract import CONFIRM_TIMEOUT
from batchcancel.venues import VENUES

__all__ = ["AirflowOptions", "Job", "JobError", "known_venues", "load_job", "load_jobs"]

ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_DEADLINE: Final = 3600.0  # seconds a job without a deadline may send for
WAIT_MARGIN: Final = 120.0  # seconds past the deadline (and confirm) before it is stopped

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
        "from_venues",
        "account",
        "symbol",
        "side",
    }
)
_AIRFLOW_KEYS: Final = frozenset(
    {"dag_id", "schedule", "retries", "retry_delay", "execution_timeout", "tags", "start_date"}
)


class JobError(Exception):
    """The job file (or the environment it needs) is unusable: nothing was started."""


def known_venues() -> tuple[str, ...]:
    """The venues batchcancel knows, in its registry's order."""
    return tuple(VENUES)


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
    # --from-venues: the venues whose task cancels from the venue's own book until it is flat
    # (each task lists its own venue only), and the scope filters every such task passes on.
    from_venues: tuple[str, ...] = ()
    account: tuple[str, ...] = ()
    symbol: tuple[str, ...] = ()
    side: str | None = None
    connection_id: str = "batchcancel_{venue}"
    airflow: AirflowOptions = field(
        default_factory=lambda: AirflowOptions("", None, 0, 60.0, None, (), "2025-01-01")
    )

    def wait_bound(self) -> float:
        """How long one batchcancel process may take before the runner stops it."""
        deadline = self.deadline if self.deadline is not None else DEFAULT_DEADLINE
        return deadline + (CONFIRM_TIMEOUT if self.confirm else 0.0) + WAIT_MARGIN


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
    known = known_venues()
    for venue in venues:
        if not isinstance(venue, str) or venue not in known:
            raise JobError(f"{where}: unknown venue {venue!r}; known: {', '.join(known)}")
    if len(set(venues)) != len(venues):
        raise JobError(f"{where}: [job] venues lists a venue twice")
    query, source = job.get("query"), job.get("source")
    books = _books(job, venues, where)
    if query is not None and source is not None:
        raise JobError(f"{where}: give [job] query (with source_db_env) or source, not both")
    if query is None and source is None and set(books) != set(venues):
        raise JobError(
            f"{where}: give [job] query (with source_db_env) or source, or from_venues = true "
            "to cancel from every venue's own book"
        )
    source_db_env = job.get("source_db_env")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise JobError(f"{where}: [job] query must be SQL text")
        if not isinstance(source_db_env, str) or not ENV_NAME.match(source_db_env):
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
        from_venues=books,
        account=_texts(job, "account", where),
        symbol=_texts(job, "symbol", where),
        side=job.get("side"),
        connection_id=connection_id,
        airflow=_airflow_options(data.get("airflow", {}), path),
    )


def _books(job: Mapping[str, object], venues: list[str], where: str) -> tuple[str, ...]:
    """[job] from_venues: true (every venue of the job), false, or a list of the job's
    venues; and the scope filters, which only narrow a listing."""
    value = job.get("from_venues", False)
    if value is True:
        books = tuple(venues)
    elif value is False:
        books = ()
    elif isinstance(value, list) and value and all(v in venues for v in value):
        books = tuple(v for v in venues if v in value)  # the job's order
    else:
        raise JobError(
            f"{where}: [job] from_venues must be true, false or a list of the job's venues "
            f"{venues}, got {value!r}"
        )
    scoped = [key for key in ("account", "symbol", "side") if key in job]
    if scoped and not books:
        raise JobError(f"{where}: [job] {', '.join(scoped)} narrow from_venues: set it too")
    side = job.get("side")
    if side is not None and side not in ("buy", "sell"):
        raise JobError(f'{where}: [job] side must be "buy" or "sell", got {side!r}')
    return books


def _texts(job: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    """A scope filter: one string or a list of them (each passed as its own flag)."""
    value = job.get(key, [])
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise JobError(f"{where}: [job] {key} must be a string or a list of non-empty strings")
    return tuple(dict.fromkeys(v.strip() for v in items))


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
