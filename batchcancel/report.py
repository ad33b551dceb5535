"""Rendering of reports (CSV / JSON, SPEC's columns in SPEC's order) and human summaries."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, Final

from batchcancel.audit.store import AuditStore, RunInfo
from batchcancel.outcomes import Outcome

__all__ = ["ATTEMPT_COLUMNS", "ORDER_COLUMNS", "format_summary", "write_report"]

ORDER_COLUMNS: Final = (
    "run_id",
    "venue",
    "order_id",
    "account_id",
    "symbol",
    "outcome",
    "reason",
    "attempts",
    "last_http_status",
    "first_sent_at",
    "last_answer_at",
)
ATTEMPT_COLUMNS: Final = (
    "run_id",
    "venue",
    "order_id",
    "attempt",
    "sent_at",
    "answered_at",
    "http_status",
    "verdict",
    "latency_ms",
    "detail",
)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with microseconds, e.g. 2026-11-29T02:03:04.000005Z."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _records(store: AuditStore, run_id: str, *, attempts: bool) -> Iterator[dict[str, Any]]:
    columns = ATTEMPT_COLUMNS if attempts else ORDER_COLUMNS
    rows = store.attempt_rows(run_id) if attempts else store.order_rows(run_id)
    for row in rows:
        values: dict[str, Any] = {"run_id": run_id}
        for name, value in zip(columns[1:], row, strict=True):
            values[name] = iso(value) if isinstance(value, datetime) else value
        yield values


def write_report(store: AuditStore, run_id: str, out: IO[str], *, fmt: str, attempts: bool) -> int:
    """Write the run's per-order (or per-attempt) report; return the number of records."""
    records = _records(store, run_id, attempts=attempts)
    if fmt == "csv":
        return _write_csv(records, ATTEMPT_COLUMNS if attempts else ORDER_COLUMNS, out)
    return _write_json(records, out)


def _write_csv(records: Iterable[dict[str, Any]], columns: Sequence[str], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    count = 0
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
        count += 1
    return count


def _write_json(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    # One array of objects, streamed: a million orders never sit in memory at once.
    out.write("[")
    count = 0
    for record in records:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(record, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def format_counts(outcomes: dict[str, int]) -> str:
    """'canceled 700, cancel_pending 100' — nonzero outcomes in SPEC order."""
    parts = [f"{o.value} {outcomes[o.value]}" for o in Outcome if outcomes.get(o.value)]
    return ", ".join(parts) or "none"


def format_summary(
    run: RunInfo,
    *,
    status: str,
    orders: int,
    outcomes: dict[str, int],
    venues: dict[str, dict[str, int]],
    elapsed_s: float,
    unfinished: int,
    stopped: str,
    halted: dict[str, str],
    db_url: str,
) -> list[str]:
    """The human summary: status line, totals, one line per venue, where to look next."""
    key = f" (key {run.run_key})" if run.run_key else ""
    lines = [f"run {run.id}{key}: {status} in {elapsed_s:.1f} s"]
    if stopped:
        lines.append(f"stopped early: {stopped}; resume with: batchcancel resume {run.id}")
    lines.append(f"orders {orders}: {format_counts(outcomes)}")
    if unfinished:
        lines.append(f"  {unfinished} orders have no outcome yet (resumable)")
    width = max((len(v) for v in venues), default=0)
    for venue, counts in venues.items():
        total = sum(counts.values())
        note = f"  [{halted[venue]}]" if venue in halted else ""
        lines.append(f"  {venue:<{width}}  {total:>8}  {format_counts(counts)}{note}")
    lines.append(f"audit: {db_url}")
    lines.append(f"report: batchcancel report {run.id} --format csv")
    return lines
