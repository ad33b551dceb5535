"""The commands that send: `run`, `kill`, `resume` and `confirm`. Each parses its options,
makes one call into runs.py, prints the summary and exits with its code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from batchcancel import config
from batchcancel.cli_common import (
    CONFIRM_TIMEOUT,
    command_line,
    db_option,
    display,
    errors,
    lease_option,
    log,
    metrics_options,
    monitoring,
    open_store,
    print_summary,
    record_metrics,
    settings,
)

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _run_options(func: F) -> F:
    options = [
        click.argument("source", required=False),
        click.option("--query", metavar="SQL", help="Read the orders with this SQL query."),
        click.option(
            "--source-db",
            envvar="BATCHCANCEL_SOURCE_DB",
            metavar="URL",
            help="Database the --query runs against [BATCHCANCEL_SOURCE_DB: keeps a password "
            "out of the process list].",
        ),
        click.option("--venue", metavar="NAME", help="Every row is for this venue."),
        click.option(
            "--venues-config",
            envvar=config.VENUES_VAR,
            metavar="FILE",
            help="Venue endpoints and limits (TOML) [BATCHCANCEL_VENUES].",
        ),
        db_option,
        click.option("--run-key", metavar="KEY", help="Idempotency key: the same key resumes."),
        click.option(
            "--dry-run", is_flag=True, help="Load, validate, plan and record; send nothing."
        ),
        click.option("--deadline", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS"),
        click.option("--max-attempts", type=click.IntRange(min=1), metavar="N"),
        click.option(
            "--json", "as_json", is_flag=True, help="Print the summary as one JSON object."
        ),
        click.option("--reason", default="", metavar="TEXT", help="Why this run was started."),
        click.option(
            "--bulk", is_flag=True, help="Use bulk-cancel endpoints where venues have one."
        ),
        click.option(
            "--all-open",
            is_flag=True,
            help="Also use cancel-all endpoints (ZebPay, tanX by market): they cancel EVERY "
            "open order of the account, listed or not. Implies --bulk.",
        ),
        click.option("--confirm", is_flag=True, help="Confirm cancel_pending orders afterwards."),
        click.option(
            "--confirm-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=CONFIRM_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="How long --confirm polls for.",
        ),
        click.option(
            "--from-venues",
            metavar="VENUES",
            help="Also cancel every working order the venues' own books list (a comma list, "
            "or all), then list again until each book is flat.",
        ),
        click.option(
            "--account", multiple=True, metavar="ID", help="--from-venues: only this account."
        ),
        click.option(
            "--symbol", multiple=True, metavar="SYM", help="--from-venues: only this symbol."
        ),
        click.option(
            "--side",
            type=click.Choice(["buy", "sell"], case_sensitive=False),
            help="--from-venues: only this side.",
        ),
        lease_option,
        metrics_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@_run_options
def run(**options: Any) -> None:
    """Cancel every order in SOURCE (a CSV path, or - for stdin), or in --query's result, or
    in the venues' own books (--from-venues)."""
    _run("run", **options)


@click.command()
@_run_options
def kill(**options: Any) -> None:
    """The kill switch: run with no prompt, every venue at full rate, short timeouts, a deadline."""
    _run("kill", **options)


def _run(
    command: str,
    *,
    venues_config: str | None,
    db: str | None,
    deadline: float | None,
    max_attempts: int | None,
    lease: float,
    as_json: bool,
    metrics_file: str | None,
    pushgateway: str | None,
    notify: str | None,
    **options: Any,
) -> None:
    from batchcancel.runs import Given, RunRequest, Watch, run_or_resume

    dry_run = bool(options["dry_run"])
    with (
        errors(),
        monitoring(
            command,
            None if dry_run else metrics_file,
            None if dry_run else pushgateway,
            None if dry_run else notify,
        ) as metrics,
    ):
        given = Given(db, venues_config, deadline, max_attempts, lease)
        request = RunRequest.of(command, given, **options)
        loaded = settings(db, venues_config)
        with open_store(loaded) as store:
            watch = Watch(log(), display(metrics), command_line(), metrics)
            summary = run_or_resume(store, request, loaded, watch)
            record_metrics(metrics, summary)
            print_summary(store, summary, as_json=as_json, db_url=loaded.db_url)
    sys.exit(summary.exit_code)


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--venues-config", envvar=config.VENUES_VAR, metavar="FILE")
@db_option
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS")
@click.option("--max-attempts", type=click.IntRange(min=1), metavar="N")
@click.option("--json", "as_json", is_flag=True)
@lease_option
@metrics_options
def resume(
    run_ref: str,
    venues_config: str | None,
    db: str | None,
    deadline: float | None,
    max_attempts: int | None,
    as_json: bool,
    lease: float,
    metrics_file: str | None,
    pushgateway: str | None,
    notify: str | None,
) -> None:
    """Continue RUN (a run id or run key) from where it stopped."""
    from batchcancel.runs import Given, Watch, resume_existing

    with errors(), monitoring("resume", metrics_file, pushgateway, notify) as metrics:
        loaded = settings(db, venues_config)
        with open_store(loaded) as store:
            watch = Watch(log(), display(metrics), command_line(), metrics)
            given = Given(db, venues_config, deadline, max_attempts, lease)
            summary = resume_existing(store, run_ref, given, loaded, watch)
            record_metrics(metrics, summary)
            print_summary(store, summary, as_json=as_json, db_url=loaded.db_url)
    sys.exit(summary.exit_code)


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--venues-config", envvar=config.VENUES_VAR, metavar="FILE")
@db_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=CONFIRM_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
)
@click.option("--json", "as_json", is_flag=True)
@metrics_options
def confirm(
    run_ref: str,
    venues_config: str | None,
    db: str | None,
    timeout: float,
    as_json: bool,
    metrics_file: str | None,
    pushgateway: str | None,
    notify: str | None,
) -> None:
    """Poll order status for RUN's cancel_pending orders until final or --timeout passes."""
    from batchcancel.runs import Given, Watch, confirm_existing

    with errors(), monitoring("confirm", metrics_file, pushgateway, notify) as metrics:
        loaded = settings(db, venues_config)
        with open_store(loaded) as store:
            watch = Watch(log(), display(metrics), command_line(), metrics)
            given = Given(db, venues_config)
            summary = confirm_existing(store, run_ref, given, timeout, loaded, watch)
            record_metrics(metrics, summary)
            # The confirm's settings may be the run's recorded ones; the audit is the same.
            print_summary(store, summary, as_json=as_json, db_url=loaded.db_url)
    sys.exit(summary.exit_code)


COMMANDS = (run, kill, resume, confirm)
