"""Planning a run: rows validated into planned orders, the kill profile, and the estimates
and announcements a plan gives rise to. Pure: no store, no network, no printing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from batchcancel.audit.records import PlannedOrder
from batchcancel.config import Settings
from batchcancel.sources import NumberedRow
from batchcancel.venues import VENUES
from batchcancel.venues.base import Venue, supports_sweep

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "KILL_DEADLINE",
    "KILL_MAX_ATTEMPTS",
    "KILL_TIMEOUT",
    "Plan",
    "estimates",
    "kill_profile",
    "plan_rows",
    "planned_message",
    "sweeping",
]

# SPEC, `kill`: a deadline, fewer attempts and short request timeouts unless given.
KILL_DEADLINE: Final = 60.0
KILL_TIMEOUT: Final = 5.0
KILL_MAX_ATTEMPTS: Final = 3
DEFAULT_MAX_ATTEMPTS: Final = 5  # drain_types.DrainOptions.max_attempts says the same
MAX_REASON: Final = 300  # characters of an invalid row's reason


@dataclass(frozen=True, slots=True)
class Plan:
    """What a source holds, per venue: orders to send and invalid rows."""

    to_send: dict[str, int]  # orders per venue (before validation when `invalid` is -1)
    invalid: int  # -1: not known yet, rows are validated as they load
    duplicates: int


def plan_rows(chunk: Iterable[NumberedRow], *, only_venue: str | None) -> Iterator[PlannedOrder]:
    """Validate each row against its venue; a row that cannot be valid is planned invalid."""
    validators: dict[str, Venue] = {}
    for numbered in chunk:
        row = numbered.row
        reason = None
        if only_venue is not None and row.venue != only_venue:
            reason = f"row is for venue {row.venue!r} but --venue {only_venue} was given"
        elif row.venue not in VENUES:
            known = ", ".join(sorted(VENUES))
            reason = f"unknown venue {row.venue!r}; known venues: {known}"
        elif not row.order_id:
            reason = "order_id is empty"
        else:
            if row.venue not in validators:
                validators[row.venue] = VENUES[row.venue]({})
            reason = validators[row.venue].validate(row)
        if numbered.invalid_reason is not None:  # the source knows better (a float id)
            reason = numbered.invalid_reason
        if reason is not None and len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "..."  # a 1 MB id must not make a 1 MB reason
        yield PlannedOrder(
            numbered.seq, row.venue, row.order_id, row.account_id, row.symbol, reason
        )


def kill_profile(settings: Settings) -> Settings:
    """The kill switch's settings: every venue's request timeout at most KILL_TIMEOUT."""
    venues = {
        name: dataclasses.replace(v, timeout=min(v.timeout, KILL_TIMEOUT))
        for name, v in settings.venues.items()
    }
    return dataclasses.replace(settings, venues=venues)


def sweeping(venue_names: Iterable[str]) -> list[str]:
    """The venues among these whose adapter has a cancel-all endpoint."""
    return sorted(name for name in venue_names if supports_sweep(VENUES.get(name)))


def planned_message(run_id: str, plan: Plan, *, dry_run: bool) -> str:
    """The `planned` line: what the run is about to cancel (or, dry, would)."""
    per_venue = ", ".join(f"{v} {n}" for v, n in sorted(plan.to_send.items()))
    total = sum(plan.to_send.values())
    if plan.invalid < 0:  # said before validation, within a second
        return (
            f"run {run_id}: about to cancel {total} orders "
            f"({per_venue or 'none'}); rows are validated as they load"
        )
    verb = "would cancel" if dry_run else "cancelling"
    return (
        f"run {run_id}: {verb} {total} orders ({per_venue or 'none'}); "
        f"{plan.invalid} invalid, {plan.duplicates} duplicate rows collapsed"
    )


def estimates(
    settings: Settings, to_send: Mapping[str, int], *, bulk: bool, all_open: bool
) -> list[str]:
    """Per venue, the requests the plan needs and how long the venue's limit makes them take."""
    lines = []
    for name, count in sorted(to_send.items()):
        venue = settings.venues[name]
        adapter = VENUES.get(name)
        if all_open and supports_sweep(adapter):
            lines.append(
                f"{name}: {count} orders by cancel-all (--all-open): a few requests, then one "
                "per order it does not list"
            )
            continue
        size = getattr(adapter, "bulk_size", 0) if bulk else 0
        requests = -(-count // size) if size > 1 else count
        what = f"{count} orders" + (f" in {requests} bulk requests" if size > 1 else "")
        if venue.rate_limit:
            seconds = requests / venue.rate_limit * venue.period
            lines.append(
                f"{name}: {what} at {venue.rate_limit} per {venue.period:g} s "
                f"= about {seconds:.0f} s"
            )
        else:
            lines.append(f"{name}: {what}, unthrottled")
    return lines
