"""The old home of the run functions, kept as a re-export so existing imports keep working.

New code imports from where each now lives: runs.py (the lifecycle), session.py (one working
session), planning.py (rows to planned orders), summary.py (the Summary).
"""

from __future__ import annotations

from batchcancel.planning import Plan, plan_rows
from batchcancel.runs import recorded_drain_options
from batchcancel.session import ViewCallback, confirm_run, resume_run, start_run
from batchcancel.summary import Summary, summarise

__all__ = [
    "Plan",
    "Summary",
    "ViewCallback",
    "confirm_run",
    "plan_rows",
    "recorded_drain_options",
    "resume_run",
    "start_run",
    "summarise",
]
