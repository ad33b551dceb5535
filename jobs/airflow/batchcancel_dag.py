"""Airflow DAGs for the batchcancel job files in jobs/: one DAG per job file.

Each DAG maps one task over the job's venues (dynamic task mapping): the venues proceed in
parallel on the workers, and a failing venue fails its own task only. Each task runs
`batchcancel run|kill --venue V --run-key K --json` through batchcancel.jobs, with the run key

    {dag_id}:{run_id}:{map_index}:{venue}

taken from the task's context (Airflow 3 may leave the logical date empty; the run id and map
index are always there). A task retry therefore resumes the same batchcancel run: orders that
already have a final outcome are never sent again. What an exit code does to the task:

    0  success
    1  some orders need attention: a failed task; retried only while some orders are still
       resumable (failed, skipped), since a retry cannot change final outcomes, or while the
       venue's book is not proven flat (a job with from_venues), since the retry lists it again
    2  usage or input error: failed without retry
    3  stopped early (deadline, SIGTERM): failed, and the retry resumes

Nothing secret is in this file. The worker's environment supplies BATCHCANCEL_DB (the audit
database), the job's source database variable (e.g. DESK_DB_URL) and the venue credentials;
an Airflow connection `batchcancel_<venue>` (the job's connection_id), if it exists, adds
credentials from its extra, keyed by variable name, e.g. {"BATCHCANCEL_SFOX_API_KEY": "..."}:
that venue's credential variables and nothing else (any other key fails the task, unretried).
BATCHCANCEL_JOBS_DIR selects another folder of job files (default: this file's parent). A
trigger's conf may name an order list ({"source": ...}) only inside the job's source_dir.

Pools bound concurrent tasks, not requests per period: each venue's rate limit is kept by
batchcancel's own lane in the one task that works the venue, and each DAG allows one active
run so that two runs of a job never work a venue at once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import dag, task  # type: ignore[no-redef]
    from airflow.operators.python import get_current_context  # type: ignore[no-redef]
try:  # where newer Airflow 3 releases keep them
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
    )

JOBS_DIR_VAR = "BATCHCANCEL_JOBS_DIR"
JOBS_DIR = Path(os.environ.get(JOBS_DIR_VAR) or Path(__file__).resolve().parent.parent)
log = logging.getLogger("batchcancel.dag")

# The runner is batchcancel.jobs, standard library only: `pip install --no-deps batchcancel`
# puts it in Airflow's Python. Without that, the checkout this file is in provides it.
if importlib.util.find_spec("batchcancel") is None:
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from batchcancel import jobs as runner  # noqa: E402  (after the path above)


def dag_run_key(context: Any, venue: str) -> str:
    """The batchcancel run key of the running mapped task: dag id, run id, map index, venue."""
    return str(
        runner.run_key(
            context["dag"].dag_id, context["run_id"], int(context["ti"].map_index), venue
        )
    )


def _connection_env(connection_id: str, venue: str) -> dict[str, str]:
    """Credentials from an Airflow connection's extra, keyed by variable name; {} if none.
    Only the venue's credential variables may be there (runner.connection_credentials):
    anything else refuses the connection with a JobError."""
    try:
        try:
            from airflow.sdk import Connection

            connection = Connection.get(connection_id)
        except ImportError:  # Airflow 2.x
            from airflow.hooks.base import BaseHook

            connection = BaseHook.get_connection(connection_id)
    except Exception as exc:  # not defined: the environment alone supplies the credentials
        log.info(
            "no Airflow connection %s (%s): credentials from the environment",
            connection_id,
            type(exc).__name__,
        )
        return {}
    extra = connection.extra_dejson or {}
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # Airflow 2.x
        from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]
    if isinstance(extra, dict):  # masked before checking, so no message can show a value
        for value in extra.values():
            if isinstance(value, str) and value:
                mask_secret(value)
    found: dict[str, str] = runner.connection_credentials(
        extra, venue=venue, where=f"Airflow connection {connection_id}"
    )
    log.info("credentials %s from Airflow connection %s", sorted(found), connection_id)
    return found


def build_dag(job: Any) -> Any:
    """The DAG of one job file: one mapped `cancel` task over the job's venues."""
    options = job.airflow
    bound = job.wait_bound() + runner.TERM_GRACE + 30
    execution_timeout = options.execution_timeout or bound

    @dag(
        dag_id=options.dag_id,
        description=job.description or f"batchcancel {job.command}: {job.path.name}",
        schedule=options.schedule,
        start_date=datetime.fromisoformat(options.start_date).replace(tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=list(options.tags),
        default_args={
            "retries": options.retries,
            "retry_delay": timedelta(seconds=options.retry_delay),
            "execution_timeout": timedelta(seconds=execution_timeout),
        },
        doc_md=__doc__,
    )
    def batchcancel_job() -> None:
        @task(task_id="cancel", map_index_template="{{ batchcancel_venue }}")
        def cancel(venue: str) -> dict[str, Any] | None:
            context = get_current_context()
            context["batchcancel_venue"] = venue  # type: ignore[typeddict-unknown-key]
            key = dag_run_key(context, venue)
            conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
            try:
                environ = dict(os.environ)
                environ.update(_connection_env(job.connection_id.format(venue=venue), venue))
                result = runner.run_job(
                    job,
                    venue=venue,
                    key=key,
                    environ=environ,
                    source=conf.get("source"),
                    reason=conf.get("reason"),
                    log=log.info,
                )
            except runner.JobError as exc:
                raise AirflowFailException(str(exc)) from None
            except runner.JobFailed as exc:
                if exc.retryable:
                    raise AirflowException(str(exc)) from None
                raise AirflowFailException(str(exc)) from None
            return result.summary  # type: ignore[no-any-return]

        cancel.expand(venue=list(job.venues))

    return batchcancel_job()


def _build_all() -> dict[str, Any]:
    jobs, errors = runner.load_jobs(JOBS_DIR)
    for path, error in errors.items():
        # Shown by Airflow as this file's warning; the other jobs' DAGs still load.
        warnings.warn(f"batchcancel job {path} skipped: {error}", stacklevel=1)
    built = {}
    for job in jobs:
        built[job.airflow.dag_id] = build_dag(job)
    return built


DAGS = _build_all()
globals().update(DAGS)
