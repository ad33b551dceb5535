"""The job runner behind the Airflow DAG and cron: a job file, one venue, one run key -> one
`batchcancel run|kill --venue V --run-key K --json` process, and what its exit means.

Standard library only, and of batchcancel only the stdlib-only contract (outcomes, contract,
the venue registry), so it imports in a scheduler's Python (Airflow pins SQLAlchemy below 2)
with `pip install --no-deps batchcancel`; BATCHCANCEL_COMMAND then names the installation
that runs. tests/test_layering.py keeps it so. jobfile reads job files, invocation builds the
command, runner runs it.
"""

from __future__ import annotations

from batchcancel.jobs.invocation import (
    COMMAND_VAR,
    Invocation,
    build_invocation,
    connection_credentials,
    run_key,
    split_csv,
    trigger_source,
    venue_query,
)
from batchcancel.jobs.jobfile import AirflowOptions, Job, JobError, load_job, load_jobs
from batchcancel.jobs.runner import TERM_GRACE, JobFailed, JobResult, classify, main, run_job

__all__ = [
    "COMMAND_VAR",
    "TERM_GRACE",
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
    "main",
    "run_job",
    "run_key",
    "split_csv",
    "trigger_source",
    "venue_query",
]
