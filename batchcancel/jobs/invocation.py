"""One venue's batchcancel command line from a job: its run key, argv, standard input and
environment, the job's query or CSV narrowed to the venue, and what a connection may add.

Standard library only, with the package's stdlib-only contract (tests/test_layering.py pins
each flag to the CLI's own options).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from batchcancel.contract import DB_VAR, MAX_RUN_KEY, SOURCE_DB_VAR, VENUES_VAR
from batchcancel.jobs.jobfile import Job, JobError
from batchcancel.venues import VENUES

__all__ = [
    "BOOK_FLAGS",
    "COMMAND_VAR",
    "FLAGS",
    "Invocation",
    "build_invocation",
    "connection_credentials",
    "hide_passwords",
    "run_key",
    "split_csv",
    "trigger_source",
    "venue_query",
]

COMMAND_VAR: Final = "BATCHCANCEL_COMMAND"  # how to start batchcancel; default: this Python
_VENUE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
# user:password@ in a URL, as batchcancel's redactor hides it (redact._USERINFO; the redactor
# itself needs click, so the rule is repeated here and pinned by tests/test_layering.py).
_URL_PASSWORD: Final = re.compile(r"(://[^/\s:@]*:)[^\s@]*@")

# Every option the runner may give `batchcancel run|kill`, besides the source ("-"). A job
# option's flag comes from here; tests/test_layering.py checks each against the CLI.
VALUE_FLAGS: Final = (
    ("reason", "--reason"),
    ("deadline", "--deadline"),
    ("max_attempts", "--max-attempts"),
)
SWITCHES: Final = (("bulk", "--bulk"), ("all_open", "--all-open"), ("confirm", "--confirm"))
# A task whose venue the job cancels from its own book: `--from-venues <its venue>` and the
# job's scope filters (--account and --symbol once per value).
BOOK_FLAGS: Final = ("--from-venues", "--account", "--symbol", "--side")
FLAGS: Final = (
    "--query",
    "--venue",
    "--run-key",
    "--json",
    "--venues-config",
    *(flag for _, flag in VALUE_FLAGS),
    *(flag for _, flag in SWITCHES),
    *BOOK_FLAGS,
)


@dataclass(frozen=True, slots=True)
class Invocation:
    """A batchcancel command line, its standard input and environment, and what may be logged
    of it."""

    argv: tuple[str, ...]
    stdin: bytes | None
    shown: str  # the command line with passwords in URLs hidden
    env: Mapping[str, str] = field(repr=False)  # the child's whole environment: secrets
    warnings: tuple[str, ...] = ()


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
    elif job.query is not None:
        assert job.source_db_env is not None
        url = environ.get(job.source_db_env)
        if not url:
            raise JobError(f"{job.source_db_env} is not set: job {job.name} reads its orders there")
        argv += ["--query", venue_query(job.query, venue=venue, venues=job.venues)]
        env[SOURCE_DB_VAR] = url  # not --source-db: argv is world-readable (ps, /proc)
    elif venue not in job.from_venues:  # load_job refuses such a job: kept for hand-made ones
        raise JobError(f"job {job.name} has no order list for {venue} and does not list its book")
    argv += ["--venue", venue, "--run-key", key, "--json"]
    if job.venues_config is not None and not environ.get(VENUES_VAR):
        argv += ["--venues-config", str(job.venues_config)]
    why = reason if reason is not None else job.reason
    argv += _job_flags(job, why)
    argv += _book_flags(job, venue)
    shown = hide_passwords(shlex.join(argv))
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


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _book_flags(job: Job, venue: str) -> list[str]:
    """`--from-venues VENUE` and the job's scope, for a venue whose book the job lists."""
    if venue not in job.from_venues:
        return []
    argv = ["--from-venues", venue]
    for account in job.account:
        argv += ["--account", account]
    for symbol in job.symbol:
        argv += ["--symbol", symbol]
    if job.side is not None:
        argv += ["--side", job.side]
    return argv


def _job_flags(job: Job, reason: str) -> list[str]:
    """The job's options as batchcancel flags, in the order of VALUE_FLAGS then SWITCHES."""
    values = {
        "reason": reason or None,
        "deadline": f"{job.deadline:g}" if job.deadline is not None else None,
        "max_attempts": str(job.max_attempts) if job.max_attempts is not None else None,
    }
    argv: list[str] = []
    for name, flag in VALUE_FLAGS:
        if (value := values[name]) is not None:
            argv += [flag, value]
    switches = {"bulk": job.bulk, "all_open": job.all_open, "confirm": job.confirm}
    argv += [flag for name, flag in SWITCHES if switches[name]]
    return argv
