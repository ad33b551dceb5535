"""Run one venue's share of a batchcancel job file from cron or a shell (the Airflow DAG uses
the same runner, batchcancel.jobs):

    python jobs/run_job.py jobs/eod_cleanup.toml --venue sfox --run-key eod:2025-01-02:sfox

The exit code is batchcancel's (2 for a job file or environment that cannot work). The runner
needs only the standard library; a Python without batchcancel installed takes it from the
checkout this file is in.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("batchcancel") is None:  # not installed: the checkout beside jobs/
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from batchcancel.jobs import (  # after the path above
    COMMAND_VAR,
    TERM_GRACE,
    AirflowOptions,
    Invocation,
    Job,
    JobError,
    JobFailed,
    JobResult,
    build_invocation,
    classify,
    connection_credentials,
    load_job,
    load_jobs,
    main,
    run_job,
    run_key,
    split_csv,
    trigger_source,
    venue_query,
)

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

if __name__ == "__main__":
    sys.exit(main())
