"""A run's counts by outcome and venue and its status: the Summary `--json` prints (SPEC)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchcancel.audit.records import LOADING, RunInfo
from batchcancel.audit.store import AuditStore
from batchcancel.outcomes import EXIT_CODES, Outcome, RunStatus, run_status

__all__ = ["Summary", "books_of", "pending_count", "starting", "summarise"]


@dataclass(frozen=True, slots=True)
class Summary:
    """The end of a session, as `--json` prints it (SPEC.md)."""

    run_id: str
    run_key: str | None
    status: RunStatus
    orders: int
    outcomes: dict[str, int]
    venues: dict[str, dict[str, int]]
    elapsed_s: float
    unfinished: int = 0
    stopped: str = ""
    halted: dict[str, str] = field(default_factory=dict)
    resumed: bool = False
    confirm: tuple[int, int] | None = None  # cancel_pending orders before and after confirming
    digest: str = ""  # the run's audit digest as this session left it (audit/chain.py)
    books: dict[str, dict[str, Any]] | None = None  # --from-venues: each venue's verdict

    @property
    def exit_code(self) -> int:
        """SPEC exit code: 0 all good, 1 attention, 3 stopped early."""
        if self.status is RunStatus.PLANNED:
            return 1 if self.outcomes.get(Outcome.INVALID, 0) else 0
        return EXIT_CODES[self.status]

    def as_json(self) -> dict[str, Any]:
        """Exactly SPEC's `--json` keys."""
        return {
            "run_id": self.run_id,
            "run_key": self.run_key,
            "status": self.status.value,
            "orders": self.orders,
            "outcomes": self.outcomes,
            "venues": self.venues,
            "elapsed_s": round(self.elapsed_s, 3),
            "digest": self.digest,
            **({"books": self.books} if self.books is not None else {}),
        }

    @property
    def flat(self) -> bool:
        """Every venue in the books' scope is flat (True without --from-venues)."""
        return self.books is None or all(b["verdict"] == "flat" for b in self.books.values())


def summarise(
    store: AuditStore,
    run: RunInfo,
    *,
    elapsed: float = 0.0,
    stopped: str = "",
    halted: Mapping[str, str] | None = None,
    resumed: bool = False,
) -> Summary:
    """Counts of a run's orders by outcome and venue, and its status."""
    counts = store.counts(run.id)
    loading = run.status == LOADING  # rows not recorded yet count as unfinished
    outcomes = {o.value: 0 for o in Outcome}
    venues: dict[str, dict[str, int]] = {}
    unfinished = orders = 0
    for venue, by_outcome in sorted(counts.items()):
        venues[venue] = {o.value: 0 for o in Outcome}
        for outcome, n in by_outcome.items():
            orders += n
            if outcome:
                outcomes[outcome] += n
                venues[venue][outcome] += n
            else:
                unfinished += n
    if run.dry_run and run.status == RunStatus.PLANNED.value:
        status = RunStatus.PLANNED
    else:
        status = run_status(
            outcomes, unfinished=unfinished + int(loading), stopped_early=bool(stopped)
        )
    books = books_of(store, run)
    if status is RunStatus.SUCCEEDED and books is not None and not all(
        b["verdict"] == "flat" for b in books.values()
    ):
        status = RunStatus.ATTENTION  # SPEC: exit 0 only when every book is proven flat
    return Summary(
        run_id=run.id,
        run_key=run.run_key,
        status=status,
        orders=orders,
        outcomes=outcomes,
        venues=venues,
        elapsed_s=elapsed,
        unfinished=unfinished,
        stopped=stopped,
        halted=dict(halted or {}),
        resumed=resumed,
        digest=store.digest(run.id),
        books=books,
    )


def books_of(store: AuditStore, run: RunInfo) -> dict[str, dict[str, Any]] | None:
    """The `--json` summary's "books" of a --from-venues run (None for any other): each
    venue in scope, with `not_flat` for one never listed (a dry run lists nothing)."""
    venues = run.options.get("from_venues")
    if venues is None:
        return None
    records = store.book_records(run.id)
    books = {}
    for venue in sorted(venues):
        record = records.get(venue)
        seconds = record.seconds_to_flat if record is not None else None
        books[venue] = {
            "verdict": record.verdict if record is not None else "not_flat",
            "listed": record.listed if record is not None else 0,
            "cancelled": record.cancelled if record is not None else 0,
            "working_at_end": record.working_at_end if record is not None else 0,
            "seconds_to_flat": None if seconds is None else round(seconds, 3),
        }
    return books


def pending_count(store: AuditStore, run_id: str) -> int:
    """The run's orders whose outcome is cancel_pending."""
    return sum(
        counts.get(Outcome.CANCEL_PENDING.value, 0) for counts in store.counts(run_id).values()
    )


def starting(run_id: str, run_key: str | None, to_send: Mapping[str, int]) -> dict[str, Any]:
    """What a kill is about to cancel, in the shape of the --json summary (status running)."""
    zeros = {o.value: 0 for o in Outcome}
    return {
        "run_id": run_id,
        "run_key": run_key,
        "status": "running",
        "orders": sum(to_send.values()),
        "outcomes": dict(zeros),
        "venues": {venue: dict(zeros) for venue in sorted(to_send)},
        "elapsed_s": 0.0,
    }
