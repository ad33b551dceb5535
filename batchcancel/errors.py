"""The exception tree. Each class says which exit code it means when it reaches the CLI.

BatchCancelError
├── InputError (exit 2)          nothing was sent
│   ├── SourceError              the order list cannot be read
│   └── ConfigError              options, venues TOML or environment are wrong
├── AuditError (exit 1)          the audit database failed or refused
│   ├── RunLockedError           another process holds the run
│   ├── RunNotFoundError         no run with that id or key
│   ├── RunKeyTakenError         another process just recorded a run with this key: join it
│   └── MigrationError           the schema could not be brought to head
├── LaneLostError (internal)     another worker took the venue lane: halt it, change nothing
└── VenueError (internal)        become outcomes in the engine, never reach the CLI
    ├── TransientVenueError      timeouts, dropped connections: retry
    └── AuthRefusedError         the venue refused our credentials
"""

from __future__ import annotations

from typing import ClassVar


class BatchCancelError(Exception):
    """Root of every error batchcancel raises on purpose."""

    exit_code: ClassVar[int] = 1


class InputError(BatchCancelError):
    """Bad input or usage: nothing was sent."""

    exit_code: ClassVar[int] = 2


class SourceError(InputError):
    """The CSV file, stdin or query cannot be read as an order list."""


class ConfigError(InputError):
    """An option, the venues TOML or an environment variable is wrong."""


class AuditError(BatchCancelError):
    """The audit database failed; sending stopped before any unrecorded request."""

    exit_code: ClassVar[int] = 1


class RunLockedError(AuditError):
    """Another live process is working this run."""


class RunNotFoundError(AuditError):
    """No run has that id or run key."""

    exit_code: ClassVar[int] = 2


class RunKeyTakenError(AuditError):
    """Another process recorded a new run with the same run key at the same moment: that
    run is the one to work (the CLI joins it, as a re-run with the key does)."""


class MigrationError(AuditError):
    """The audit schema could not be created or upgraded."""


class VenueError(BatchCancelError):
    """A venue exchange went wrong; the engine turns these into outcomes."""

    def __init__(self, message: str, *, venue: str = "") -> None:
        super().__init__(message)
        self.venue = venue


class TransientVenueError(VenueError):
    """The outcome is unknown (timeout, dropped connection): the order may be retried."""


class AuthRefusedError(VenueError):
    """The venue refused our credentials: stop sending to it."""


class LaneLostError(BatchCancelError):
    """Another worker took over this worker's venue lane: it sends and changes nothing more
    there. Internal: the engine halts the lane; it never reaches the CLI."""

    def __init__(self, venue: str) -> None:
        super().__init__(f"lost the lane lease on {venue} to another worker")
        self.venue = venue
