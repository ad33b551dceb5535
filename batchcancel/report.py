"""Rendering of reports (CSV / JSON, SPEC's columns in SPEC's order) and human summaries.

Every text goes through a Redactor on its way out (the store's, which knows the credentials):
what the audit holds was redacted when stored, but a run recorded before a credential was
known, or by an older version, must not leak it either. CSV cells that a spreadsheet would
read as a formula are written behind a single quote; JSON stays exact.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, Final

from batchcancel.audit.store import AuditStore, RunInfo
from batchcancel.outcomes import Outcome
from batchcancel.redact import Redactor

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
# OWASP, CSV injection: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with microseconds, e.g. 2026-11-29T02:03:04.000005Z."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _records(
    store: AuditStore, run_id: str, *, attempts: bool, redactor: Redactor
) -> Iterator[dict[str, Any]]:
    columns = ATTEMPT_COLUMNS if attempts else ORDER_COLUMNS
    rows = store.attempt_rows(run_id) if attempts else store.order_rows(run_id)
    text = redactor.text
    for row in rows:
        values: dict[str, Any] = {"run_id": run_id}
        for name, value in zip(columns[1:], row, strict=True):
            if isinstance(value, datetime):
                value = iso(value)
            elif isinstance(value, str):
                value = text(value)
            values[name] = value
        yield values


def write_report(
    store: AuditStore,
    run_id: str,
    out: IO[str],
    *,
    fmt: str,
    attempts: bool,
    redactor: Redactor | None = None,
) -> int:
    """Write the run's per-order (or per-attempt) report; return the number of records.
    Texts go through `redactor`, by default the store's."""
    records = _records(store, run_id, attempts=attempts, redactor=redactor or store.redactor)
    if fmt == "csv":
        return _write_csv(records, ATTEMPT_COLUMNS if attempts else ORDER_COLUMNS, out)
    return _write_json(records, out)


def _csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, and a text a spreadsheet would run as a formula
    behind a single quote (OWASP). Only texts: numbers (attempts, statuses, latencies) are
    written as numbers, so a negative one would stay a number. Ids are texts, so an id like
    "-5" is written '-5: a spreadsheet shows it as the text it is; JSON has it exact."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _write_csv(records: Iterable[dict[str, Any]], columns: Sequence[str], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    count = 0
    for record in records:
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
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
    redactor: Redactor | None = None,
    digest: str = "",
) -> list[str]:
    """The human summary: status line, totals, one line per venue, where to look next. Each
    line goes through `redactor` (by default one that knows the password patterns only)."""
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
    if digest:
        lines.append(f"digest: {digest} (batchcancel verify {run.id})")
    lines.append(f"report: batchcancel report {run.id} --format csv")
    return [(redactor or Redactor()).text(line) for line in lines]
