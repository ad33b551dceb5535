"""The names the CLI and the job runner must agree on, in a module that imports nothing.

The job runner (batchcancel.jobs) runs in a scheduler's Python, where only the standard
library can be counted on, so it cannot import the CLI (click) or the store (SQLAlchemy) to
learn them. tests/test_layering.py pins each value here to the CLI's and the config's own.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CONFIRM_TIMEOUT", "DB_VAR", "MAX_RUN_KEY", "SOURCE_DB_VAR", "VENUES_VAR"]

DB_VAR: Final = "BATCHCANCEL_DB"  # the audit database URL (config.DB_VAR)
SOURCE_DB_VAR: Final = "BATCHCANCEL_SOURCE_DB"  # `run|kill --source-db`, from the environment
VENUES_VAR: Final = "BATCHCANCEL_VENUES"  # `--venues-config`, from the environment
CONFIRM_TIMEOUT: Final = 60.0  # seconds: the default of `run|kill --confirm-timeout`
MAX_RUN_KEY: Final = 255  # characters: the audit database's runs.run_key column
