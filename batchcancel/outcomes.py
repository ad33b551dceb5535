"""The closed vocabulary of per-order outcomes (SPEC.md, Outcomes) and the exit-code rule."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Outcome(StrEnum):
    """Where an order ended. Exactly SPEC's eight values."""

    CANCELED = "canceled"
    CANCEL_PENDING = "cancel_pending"
    ALREADY_CLOSED = "already_closed"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    INVALID = "invalid"
    FAILED = "failed"
    SKIPPED = "skipped"


FINAL: Final = frozenset(
    {
        Outcome.CANCELED,
        Outcome.CANCEL_PENDING,
        Outcome.ALREADY_CLOSED,
        Outcome.NOT_FOUND,
        Outcome.REJECTED,
        Outcome.INVALID,
    }
)
RESUMABLE: Final = frozenset({Outcome.FAILED, Outcome.SKIPPED})
# Outcomes that need nobody's attention: the order is gone or going.
GOOD: Final = frozenset({Outcome.CANCELED, Outcome.CANCEL_PENDING, Outcome.ALREADY_CLOSED})

EXIT_OK: Final = 0
EXIT_ATTENTION: Final = 1
EXIT_USAGE: Final = 2
EXIT_STOPPED: Final = 3


class RunStatus(StrEnum):
    """A run's status as the `--json` summary and `status` show it."""

    RUNNING = "running"
    PLANNED = "planned"
    SUCCEEDED = "succeeded"
    ATTENTION = "attention"
    STOPPED = "stopped"


def run_status(outcomes: Mapping[str, int], *, unfinished: int, stopped_early: bool) -> RunStatus:
    """Status of a finished session: stopped if it stopped early with resumable work left."""
    resumable = unfinished + sum(outcomes.get(o, 0) for o in RESUMABLE)
    if stopped_early and resumable:
        return RunStatus.STOPPED
    if unfinished or any(n and Outcome(o) not in GOOD for o, n in outcomes.items()):
        return RunStatus.ATTENTION
    return RunStatus.SUCCEEDED


EXIT_CODES: Final[Mapping[RunStatus, int]] = {
    RunStatus.SUCCEEDED: EXIT_OK,
    RunStatus.ATTENTION: EXIT_ATTENTION,
    RunStatus.STOPPED: EXIT_STOPPED,
    RunStatus.PLANNED: EXIT_OK,
    RunStatus.RUNNING: EXIT_ATTENTION,
}
