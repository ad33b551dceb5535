"""The commands that only read or maintain the audit: `status`, `report`, `db upgrade` and
`venues`. Each reads through the store and prints; none sends anything."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchcancel import __version__, config, redact
from batchcancel.cli_common import (
    book_lines,
    db_option,
    errors,
    hide_password,
    log,
    open_store,
    settings,
)
from batchcancel.config import Settings
from batchcancel.errors import ConfigError

if TYPE_CHECKING:
    from batchcancel.audit.records import RunInfo
    from batchcancel.audit.store import AuditStore

__all__ = ["COMMANDS"]


@click.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@db_option
@click.option("--json", "as_json", is_flag=True)
def status(run_ref: str | None, db: str | None, as_json: bool) -> None:
    """One run's counts by outcome and state; without RUN, the recent runs."""
    from batchcancel.report import format_counts, iso
    from batchcancel.summary import summarise

    with errors(), open_store(settings(db)) as store:
        if run_ref is None:
            runs = store.recent_runs()
            if as_json:
                click.echo(json.dumps([_run_json(store, r) for r in runs]))
                return
            if not runs:
                click.echo("no runs yet")
            for r in runs:
                summary = summarise(store, r)
                click.echo(
                    f"{r.id}  {r.command:<6} {summary.status.value:<10} "
                    f"{summary.orders:>9} orders  {iso(r.created_at)}  "
                    f"{r.run_key or ''}"
                )
            return
        run = store.find_run(run_ref)
        summary = summarise(store, run)
        states = store.state_counts(run.id)
        if as_json:
            click.echo(json.dumps(_run_json(store, run)))
            return
        key = f" (key {run.run_key})" if run.run_key else ""
        click.echo(
            f"run {run.id}{key}: {summary.status.value}, {run.command}, "
            f"created {iso(run.created_at)}"
        )
        if run.reason:
            click.echo(f"reason: {run.reason}")
        click.echo(f"digest: {summary.digest}")
        if run.options.get("all_open"):
            click.echo(
                "all-open: cancel-all endpoints allowed (they cancel every open order of "
                "the account)"
            )
        click.echo(f"orders {summary.orders}: {format_counts(summary.outcomes)}")
        click.echo("states: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
        for venue, counts in summary.venues.items():
            click.echo(f"  {venue}: {format_counts(counts)}")
        for line in book_lines(summary.books):
            click.echo(line)


def _run_json(store: AuditStore, run: RunInfo) -> dict[str, Any]:
    from batchcancel.report import iso
    from batchcancel.summary import summarise

    data = summarise(store, run).as_json()
    data.pop("elapsed_s")
    data["created_at"] = iso(run.created_at)
    data["finished_at"] = iso(run.finished_at)
    data["states"] = store.state_counts(run.id)
    data["options"] = dict(run.options)  # what the run was started with (never a credential)
    return data


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json", "html", "kill"]), required=True
)
@click.option("--attempts", is_flag=True, help="One record per attempt instead of per order.")
@click.option("--json", "as_json", is_flag=True, help="kill: the report as one JSON object.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE")
@click.option(
    "--venues-config",
    envvar=config.VENUES_VAR,
    metavar="FILE",
    help="html: the venue limits to chart against (default: the config the run recorded).",
)
@db_option
def report(
    run_ref: str,
    fmt: str,
    attempts: bool,
    as_json: bool,
    output: str | None,
    venues_config: str | None,
    db: str | None,
) -> None:
    """Per-order outcomes (or every attempt) of RUN, as CSV or JSON; an HTML page; or the
    kill report (who, why, scope, each venue's book and verdict, what needs a human)."""
    from batchcancel.report import write_report

    with errors():
        if as_json and fmt != "kill":
            raise ConfigError("--json is for --format kill; use --format json for records")
        loaded = settings(db)
        with open_store(loaded) as store:
            run = store.find_run(run_ref)
            if fmt == "kill":
                from batchcancel.kill_report import kill_report

                text = kill_report(store, run.id, as_json=as_json)
                if output:
                    Path(output).write_text(text + "\n", encoding="utf-8")
                    click.echo(f"wrote the kill report to {output}", err=True)
                else:
                    click.echo(text)
            elif fmt == "html":
                _html_report(store, run, loaded, output, venues_config, attempts=attempts)
            elif output:
                with open(output, "w", encoding="utf-8", newline="") as out:
                    count = write_report(store, run.id, out, fmt=fmt, attempts=attempts)
                click.echo(f"wrote {count} records to {output}", err=True)
            else:
                write_report(store, run.id, sys.stdout, fmt=fmt, attempts=attempts)


def _html_report(
    store: AuditStore,
    run: RunInfo,
    settings: Settings,
    output: str | None,
    venues_config: str | None,
    *,
    attempts: bool,
) -> None:
    """`report RUN --format html`: one self-contained page, written atomically to -o FILE
    (or to stdout). The venue limits it charts against are those of --venues-config (or
    BATCHCANCEL_VENUES), else of the config the run recorded, else the built-in defaults."""
    from batchcancel.report_html import VenueLimit, render_html
    from batchcancel.summary import summarise

    if attempts:
        raise ConfigError(
            "--attempts is for --format csv or json; the HTML report names the command that "
            "lists every attempt"
        )
    recorded = run.options.get("venues_config")
    if venues_config:
        source, path = f"venues config {venues_config}", venues_config
    elif recorded and os.path.exists(str(recorded)):
        source, path = f"venues config {recorded} (recorded with the run)", str(recorded)
    else:
        missing = f" ({recorded} no longer exists)" if recorded else ""
        source = (
            "built-in defaults (the venues' documented production limits): the run recorded "
            f"no venues config{missing}; give --venues-config FILE for the limits it ran with"
        )
        path = os.devnull
    limited = config.load_settings({}, db_url=settings.db_url, venues_config=path)
    limits = {name: VenueLimit(v.rate_limit, v.period) for name, v in limited.venues.items()}
    page, facts = render_html(
        store,
        run.id,
        limits=limits,
        limits_source=source,
        status=summarise(store, run).status.value,
        redactor=redact.current(),
        generated_by=f"batchcancel {__version__}",
    )
    if not output:
        click.echo(page, nl=False)
        return
    directory = os.path.dirname(os.path.abspath(output))
    temporary = os.path.join(directory, f".{os.path.basename(output)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log()(
        "report",
        f"wrote the HTML report of run {run.id} to {output} ({len(page.encode()) // 1024} KiB, "
        f"{len(facts['venues'])} venues, rendered in {facts['render_seconds']:.2f} s)",
        run_id=run.id,
        bytes=len(page.encode()),
        render_seconds=round(facts["render_seconds"], 3),
    )


@click.group()
def db() -> None:
    """Audit database maintenance."""


@db.command("upgrade")
@db_option
def db_upgrade(db: str | None) -> None:
    """Create or upgrade the audit schema in --db."""
    with errors():
        loaded = settings(db)
        with open_store(loaded):
            pass  # opening the store applies the migrations
        click.echo(f"audit database is at the newest schema: {hide_password(loaded.db_url)}")


@click.command()
def venues() -> None:
    """The venue adapters, their required columns and credential variables (never values)."""
    from batchcancel.venues import VENUES

    for name, venue in VENUES.items():
        columns = ", ".join(sorted(venue.required_columns))
        variables = ", ".join(
            f"{var} ({'set' if config.credential_is_set(var) else 'not set'})"
            for var in venue.credential_vars
        )
        click.echo(f"{name}: columns {columns}; credentials {variables}")


COMMANDS = (status, report, db, venues)
