"""The command line (SPEC.md, Commands). The only module that prints or exits.

Every expected failure is a BatchCancelError, printed as one line with its exit code; an
unexpected one is printed as one line too (set BATCHCANCEL_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import click

from batchcancel import __version__, redact
from batchcancel.config import Settings, load_settings
from batchcancel.errors import BatchCancelError, ConfigError, RunKeyTakenError, RunNotFoundError

__all__ = ["main"]

DEBUG_VAR: Final = "BATCHCANCEL_DEBUG"
KILL_DEADLINE: Final = 60.0
KILL_TIMEOUT: Final = 5.0
KILL_MAX_ATTEMPTS: Final = 3
CONFIRM_TIMEOUT: Final = 60.0


_log_json = False  # set by --log-format json: stderr lines become JSON objects


def _log(event: str, message: str, *, level: str = "info", **fields: Any) -> None:
    """One line on stderr: plain text, or a JSON object for log shippers. The message and
    every field value go through the command's redactor first."""
    redactor = redact.current()
    message = redactor.text(message)
    if _log_json:
        record = {"ts": datetime.now(UTC).isoformat(), "level": level, "event": event}
        click.echo(json.dumps({**record, "message": message, **redactor.value(fields)}), err=True)
    else:
        prefix = "batchcancel: error: " if level == "error" else "batchcancel: "
        click.echo(prefix + message, err=True)


def _install_redactor(settings: Settings | None = None) -> None:
    """Give the command its redactor (SPEC: no credential and no database password leaves the
    process): the credentials of `settings`, else of the environment, and the passwords of the
    database URLs the command was given. Kept in click's context for the command's duration,
    where _log and the progress display find it (redact.current()), rather than in a global."""
    context = click.get_current_context(silent=True)
    params = context.params if context is not None else {}
    if settings is None:
        try:
            # Credentials come from the environment alone; the venues file is left to the
            # command, which reads it (and reports its errors) itself.
            settings = load_settings(os.environ, venues_config=os.devnull)
        except ConfigError:
            settings = None  # the command stops on the same error, which names no value
    urls = [params.get("db"), params.get("source_db"), settings.db_url if settings else None]
    redact.install(redact.Redactor(settings.secrets if settings else (), urls=urls))


def _progress(settings: Settings | None = None, limits: dict[str, Any] | None = None) -> Any:
    """The live view; it shows each venue's configured limit (of `settings`, or `limits`)."""
    from batchcancel.progress import Progress

    if settings is not None:
        limits = {name: (v.rate_limit, v.period) for name, v in settings.venues.items()}
    return Progress(json_lines=_log_json, limits=limits)


def _fail(message: str, code: int) -> None:
    _log("error", message, level="error", exit_code=code)
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn every failure into one line on stderr and SPEC's exit code."""
    try:
        _install_redactor()  # before anything can be said; _open_store completes it
        yield
    except BatchCancelError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; whatever is not final is resumable (batchcancel resume RUN)", 3)
    except Exception as exc:
        if os.environ.get(DEBUG_VAR):
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"internal error: {type(exc).__name__}: {text} (set {DEBUG_VAR}=1 for details)", 1)


def _settings(db: str | None, venues_config: str | None = None) -> Settings:
    return load_settings(os.environ, db_url=db, venues_config=venues_config)


@contextmanager
def _open_store(settings: Settings) -> Iterator[Any]:
    """The audit store, closed when the block ends."""
    from batchcancel.audit.store import AuditStore

    store = AuditStore(settings.db_url, redact=settings.secrets)
    _install_redactor(settings)
    try:
        yield store
    finally:
        store.close()


def _command_line() -> str:
    """The command line as the audit records it: each argument redacted before it is quoted,
    so that a password holding a quote or a space is hidden whole."""
    redactor = redact.current()
    return " ".join(shlex.quote(redactor.text(arg)) for arg in ["batchcancel", *sys.argv[1:]])


lease_option = click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="PostgreSQL workers: how long a venue lane stays with a worker that stops renewing it.",
)
db_option = click.option(
    "--db", envvar="BATCHCANCEL_DB", metavar="URL", help="Audit database URL [BATCHCANCEL_DB]."
)


def metrics_options(func: Any) -> Any:
    """--metrics-file, --pushgateway and --notify (SPEC, Evidence and monitoring)."""
    func = click.option(
        "--notify",
        envvar="BATCHCANCEL_NOTIFY",
        metavar="URL",
        help="POST the --json summary to this webhook at the end (a kill: also at its start); "
        "bounded in time, never fatal [BATCHCANCEL_NOTIFY].",
    )(func)
    func = click.option(
        "--pushgateway",
        envvar="BATCHCANCEL_PUSHGATEWAY",
        metavar="URL",
        help="Push the run's metrics to this Prometheus Pushgateway at the end "
        "[BATCHCANCEL_PUSHGATEWAY].",
    )(func)
    return click.option(
        "--metrics-file",
        type=click.Path(dir_okay=False),
        metavar="PATH",
        help="Write the run's metrics in Prometheus textfile format (node_exporter: name it "
        "*.prom), atomically, every few seconds and at the end.",
    )(func)


@contextmanager
def _monitoring(
    command: str, metrics_file: str | None, pushgateway: str | None, notify: str | None = None
) -> Iterator[Any]:
    """The command's metrics and webhook (None when none are asked for): written whatever
    way the command ends, a success recorded only from its summary."""
    if not (metrics_file or pushgateway or notify):
        yield None
        return
    from batchcancel.metrics import Monitor

    metrics = Monitor(
        command,
        textfile=metrics_file,
        pushgateway=pushgateway,
        notify=notify,
        warn=lambda message: _log("monitoring", message, level="warning"),
    )
    try:
        yield metrics
    finally:
        metrics.finish()


def _watched(progress: Any, metrics: Any) -> Any:
    """The views callback: the progress display, and the metrics when there are any."""
    if metrics is None:
        return progress

    def views(lanes: Any) -> None:
        progress(lanes)
        metrics(lanes)

    return views


def _starting(run_id: str, run_key: str | None, plan: Any) -> dict[str, Any]:
    """What a kill is about to cancel, in the shape of the --json summary (status running)."""
    from batchcancel.outcomes import Outcome

    zeros = {o.value: 0 for o in Outcome}
    return {
        "run_id": run_id,
        "run_key": run_key,
        "status": "running",
        "orders": sum(plan.to_send.values()),
        "outcomes": dict(zeros),
        "venues": {venue: dict(zeros) for venue in sorted(plan.to_send)},
        "elapsed_s": 0.0,
    }


def _record_metrics(metrics: Any, summary: Any) -> None:
    if metrics is not None:
        metrics.record(
            success=summary.status.value == "succeeded",
            duration=float(summary.elapsed_s),
            summary=redact.current().value(summary.as_json()),
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchcancel")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the lines on stderr (json: one object per line, for log shippers).",
)
def cli(log_format: str) -> None:
    """Cancel trading orders in bulk across venues, with a write-ahead audit trail."""
    global _log_json
    _log_json = log_format == "json"


def _run_options(func: Any) -> Any:
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
            envvar="BATCHCANCEL_VENUES",
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
        lease_option,
        metrics_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@_run_options
def run(**kwargs: Any) -> None:
    """Cancel every order in SOURCE (a CSV path, or - for stdin), or in --query's result."""
    _run("run", **kwargs)


@cli.command()
@_run_options
def kill(**kwargs: Any) -> None:
    """The kill switch: run with no prompt, every venue at full rate, short timeouts, a deadline."""
    if kwargs["deadline"] is None:
        kwargs["deadline"] = KILL_DEADLINE
    if kwargs["max_attempts"] is None:
        kwargs["max_attempts"] = KILL_MAX_ATTEMPTS
    _run("kill", **kwargs)


def _run(
    command: str,
    *,
    source: str | None,
    query: str | None,
    source_db: str | None,
    venue: str | None,
    venues_config: str | None,
    db: str | None,
    run_key: str | None,
    dry_run: bool,
    deadline: float | None,
    max_attempts: int | None,
    as_json: bool,
    reason: str,
    bulk: bool,
    all_open: bool,
    confirm: bool,
    confirm_timeout: float,
    lease: float,
    metrics_file: str | None,
    pushgateway: str | None,
    notify: str | None,
) -> None:
    from batchcancel.commands import Plan, start_run
    from batchcancel.drain_types import DrainOptions
    from batchcancel.sources import read_csv, read_query
    from batchcancel.venues import get_venue

    with _errors(), _monitoring(
        command,
        None if dry_run else metrics_file,
        None if dry_run else pushgateway,
        None if dry_run else notify,
    ) as metrics:
        if (source is None) == (query is None):
            raise ConfigError("give either SOURCE (a CSV path or -) or --query with --source-db")
        if query is not None and not source_db:
            raise ConfigError("--query needs --source-db URL")
        if venue is not None:
            venue = venue.strip().lower()
            get_venue(venue)
        loaded = _settings(db, venues_config)
        settings = _kill_profile(loaded) if command == "kill" else loaded
        bulk = bulk or all_open or command == "kill"  # SPEC: always on for kill
        drain_options = DrainOptions(
            max_attempts=max_attempts or 5,
            deadline=deadline,
            lease=lease,
            claim_all=command == "kill",
            bulk=bulk,
            all_open=all_open,
        )
        confirm_options = (
            DrainOptions(
                confirm=True, deadline=confirm_timeout, max_attempts=drain_options.max_attempts
            )
            if confirm
            else None
        )
        with _open_store(settings) as store:
            existing = store.find_run_key(run_key) if run_key else None
            if existing is not None and dry_run:
                # SPEC: a dry run sends nothing and changes nothing, an existing run included.
                summary = _would_resume(store, existing)
                _print_summary(store, summary, as_json=as_json, db_url=settings.db_url)
                sys.exit(summary.exit_code)
            if existing is not None and existing.status != "loading":
                # SPEC: a re-run with a key is a resume in every respect, with the run's
                # recorded options (a cancel-all already sent is never sent again).
                _log(
                    "resuming",
                    f"run key {run_key} belongs to run {existing.id}: resuming it with its "
                    "recorded options (the source is not read again)",
                    run_id=existing.id,
                )
                if metrics is not None:
                    metrics.attach(store, existing.id)
                summary = _resume(
                    store,
                    existing,
                    loaded,
                    db=db,
                    venues_config=venues_config,
                    deadline=deadline,
                    max_attempts=max_attempts,
                    lease=lease,
                    metrics=metrics,
                )
                _record_metrics(metrics, summary)
                _print_summary(store, summary, as_json=as_json, db_url=settings.db_url)
                sys.exit(summary.exit_code)
            try:
                with _progress(settings) as progress:
                    table = (
                        read_csv(source, venue=venue)
                        if source is not None
                        else read_query(query or "", source_db or "", venue=venue)
                    )
                    if table.warning:  # a dialect that cannot enforce read-only itself
                        _log("source_warning", table.warning, level="warning")

                    def announce(run_id: str, plan: Plan) -> None:
                        if metrics is not None:
                            metrics.attach(store, run_id)
                            if command == "kill":
                                metrics.starting(_starting(run_id, run_key, plan))
                        per_venue = ", ".join(f"{v} {n}" for v, n in sorted(plan.to_send.items()))
                        total = sum(plan.to_send.values())
                        if plan.invalid < 0:  # said before validation, within a second
                            message = (
                                f"run {run_id}: about to cancel {total} orders "
                                f"({per_venue or 'none'}); rows are validated as they load"
                            )
                        else:
                            verb = "would cancel" if dry_run else "cancelling"
                            message = (
                                f"run {run_id}: {verb} {total} orders ({per_venue or 'none'}); "
                                f"{plan.invalid} invalid, {plan.duplicates} duplicate rows "
                                "collapsed"
                            )
                        _log(
                            "planned",
                            message,
                            run_id=run_id,
                            orders=plan.to_send,
                            invalid=plan.invalid,
                            duplicates=plan.duplicates,
                        )
                        if all_open and (sweeping := _sweeping(plan.to_send)):
                            _log(
                                "all_open",
                                f"--all-open: cancel-all at {', '.join(sweeping)} cancels every "
                                "open order of the account, listed or not; each is recorded",
                                run_id=run_id,
                                venues=sweeping,
                            )
                        if dry_run:
                            for line in _estimates(settings, plan, bulk=bulk, all_open=all_open):
                                _log("estimate", line.strip())
                        else:
                            _warn_shared_venues(store, run_id, lambda: plan.to_send)

                    summary = start_run(
                        store,
                        settings,
                        table,
                        command=command,
                        run_key=run_key,
                        only_venue=venue,
                        options={
                            "venue": venue,
                            "max_attempts": drain_options.max_attempts,
                            "deadline": deadline,
                            "bulk": bulk,
                            "all_open": all_open,
                            "confirm": confirm,
                            "confirm_timeout": confirm_timeout,
                            "venues_config": (
                                os.path.abspath(venues_config) if venues_config else None
                            ),
                        },
                        reason=reason,
                        command_line=_command_line(),
                        dry_run=dry_run,
                        drain_options=drain_options,
                        views=_watched(progress, metrics),
                        on_planned=announce,
                        loading=existing,
                        confirm_options=confirm_options,
                    )
            except RunKeyTakenError as taken:
                # Another process (a second worker, an Airflow retry) recorded a run with
                # this key since we looked: it is the same run, so this one joins it.
                joined = store.find_run(run_key or "")
                _log("resuming", f"{taken}: joining it as a resume", run_id=joined.id)
                summary = _resume(
                    store,
                    joined,
                    loaded,
                    db=db,
                    venues_config=venues_config,
                    deadline=deadline,
                    max_attempts=max_attempts,
                    lease=lease,
                    metrics=metrics,
                )
            _record_metrics(metrics, summary)
            _print_summary(store, summary, as_json=as_json, db_url=settings.db_url)
    sys.exit(summary.exit_code)


def _warn_shared_venues(store: Any, run_id: str, needed: Callable[[], Iterable[str]]) -> None:
    """Say which venues this run needs (`needed`, asked only when another live run of this
    audit database holds some venue: on resume it scans the run) that such a run is
    sending to: each run keeps the venue's limit on its own, so 429s slow both."""
    held = store.venues_held_by_other_runs(run_id)
    if not held:
        return
    wanted = set(needed())
    for venue, others in held.items():
        if venue not in wanted:
            continue
        named = ", ".join(f"{other} ({command})" for other, command in others)
        _log(
            "shared_venue",
            f"{venue}: run {named} is sending there too; the runs share its rate limit, so "
            "both go slower and 429s may pause both",
            level="warning",
            run_id=run_id,
            venue=venue,
            other_runs=[other for other, _ in others],
        )


def _sweeping(venue_names: Iterable[str]) -> list[str]:
    """The venues among these whose adapter has a cancel-all endpoint."""
    from batchcancel.venues import VENUES
    from batchcancel.venues.base import supports_sweep

    return sorted(name for name in venue_names if supports_sweep(VENUES.get(name)))


def _kill_profile(settings: Settings) -> Settings:
    venues = {
        name: dataclasses.replace(v, timeout=min(v.timeout, KILL_TIMEOUT))
        for name, v in settings.venues.items()
    }
    return dataclasses.replace(settings, venues=venues)


def _estimates(settings: Settings, plan: Any, *, bulk: bool, all_open: bool) -> list[str]:
    """Per venue, the requests the plan needs and how long the venue's limit makes them take."""
    from batchcancel.venues import VENUES
    from batchcancel.venues.base import supports_sweep

    lines = []
    for name, count in sorted(plan.to_send.items()):
        venue = settings.venues[name]
        adapter = VENUES.get(name)
        if all_open and supports_sweep(adapter):
            lines.append(
                f"  {name}: {count} orders by cancel-all (--all-open): a few requests, then one "
                "per order it does not list"
            )
            continue
        size = getattr(adapter, "bulk_size", 0) if bulk else 0
        requests = -(-count // size) if size > 1 else count
        what = f"{count} orders" + (f" in {requests} bulk requests" if size > 1 else "")
        if venue.rate_limit:
            seconds = requests / venue.rate_limit * venue.period
            lines.append(
                f"  {name}: {what} at {venue.rate_limit} per {venue.period:g} s "
                f"= about {seconds:.0f} s"
            )
        else:
            lines.append(f"  {name}: {what}, unthrottled")
    return lines


def _print_summary(store: Any, summary: Any, *, as_json: bool, db_url: str) -> None:
    from batchcancel.report import format_summary

    if summary.confirm is not None:
        before, after = summary.confirm
        _log(
            "confirmed",
            f"confirm: {before} orders were cancel_pending; {before - after} are "
            f"now confirmed final, {after} still pending",
            pending_before=before,
            still_pending=after,
        )
        filled = store.filled_while_pending(summary.run_id)
        for venue, order_id in filled:
            _log(
                "filled",
                f"confirm: {venue} order {order_id} filled before its cancel took effect: "
                "check the position",
                level="warning",
                venue=venue,
                order_id=order_id,
            )
    for venue, count in sorted(store.not_in_input(summary.run_id).items()):
        _log(
            "not_in_input",
            f"{venue}: cancel-all (--all-open) also cancelled {count} orders the input did not "
            "list; the report shows them with reason 'not in the input'",
            level="warning",
            venue=venue,
            orders=count,
        )
    redactor = redact.current()
    if as_json:
        click.echo(json.dumps(redactor.value(summary.as_json())))
        return
    run = store.find_run(summary.run_id)
    lines = format_summary(
        run,
        status=summary.status.value,
        orders=summary.orders,
        outcomes=summary.outcomes,
        venues=summary.venues,
        elapsed_s=summary.elapsed_s,
        unfinished=summary.unfinished,
        stopped=summary.stopped,
        halted=summary.halted,
        db_url=_hide_password(db_url),
        redactor=redactor,
    )
    click.echo("\n".join(lines))


def _hide_password(url: str) -> str:
    """A database URL fit to print: user:pw@, password= parameters and known secrets hidden."""
    return redact.current().text(url)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--venues-config", envvar="BATCHCANCEL_VENUES", metavar="FILE")
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

    with _errors(), _monitoring("resume", metrics_file, pushgateway, notify) as metrics:
        settings = _settings(db, venues_config)
        with _open_store(settings) as store:
            run = store.find_run(run_ref)
            if metrics is not None:
                metrics.attach(store, run.id)
            if run.status == "loading":
                raise RunNotFoundError(
                    f"run {run.id} was interrupted while its orders were loading; run it again "
                    "with the same --run-key and source to finish loading"
                )
            summary = _resume(
                store,
                run,
                settings,
                db=db,
                venues_config=venues_config,
                deadline=deadline,
                max_attempts=max_attempts,
                lease=lease,
                metrics=metrics,
            )
            _record_metrics(metrics, summary)
            _print_summary(store, summary, as_json=as_json, db_url=settings.db_url)
    sys.exit(summary.exit_code)


def _resume(
    store: Any,
    run: Any,
    settings: Settings,
    *,
    db: str | None,
    venues_config: str | None,
    deadline: float | None,
    max_attempts: int | None,
    lease: float,
    metrics: Any = None,
) -> Any:
    """Resume `run` with the options it was recorded with: `resume RUN` and a re-run with
    its --run-key both come here, so the two cannot differ. `settings` are as loaded for this
    command (no kill profile): the run's recorded command decides the profile."""
    from batchcancel.commands import recorded_drain_options, resume_run

    settings = _recorded_settings(run, settings, db, venues_config)
    if run.command == "kill":
        settings = _kill_profile(settings)
    drain_options, confirm_options = recorded_drain_options(
        run, deadline=deadline, max_attempts=max_attempts, lease=lease
    )
    _warn_shared_venues(store, run.id, lambda: store.venues_with_work(run.id))
    with _progress(settings) as progress:
        return resume_run(
            store,
            settings,
            run,
            command_line=_command_line(),
            drain_options=drain_options,
            views=_watched(progress, metrics),
            confirm_options=confirm_options,
        )


def _would_resume(store: Any, run: Any) -> Any:
    """A dry run on an existing run: say what a resume would send, per venue; change nothing."""
    from batchcancel.commands import would_resume

    summary, to_send = would_resume(store, run)
    per_venue = ", ".join(f"{v} {n}" for v, n in sorted(to_send.items()))
    loading = (
        "; its loading was interrupted, so a re-run also records the source's remaining rows"
        if run.status == "loading"
        else ""
    )
    _log(
        "planned",
        f"run key {run.run_key} belongs to run {run.id}: a resume would send "
        f"{sum(to_send.values())} orders ({per_venue or 'none'}){loading}; dry run: nothing "
        "sent, nothing changed",
        run_id=run.id,
        orders=to_send,
    )
    return summary


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--venues-config", envvar="BATCHCANCEL_VENUES", metavar="FILE")
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
    from batchcancel.commands import confirm_run
    from batchcancel.drain_types import DrainOptions

    with _errors(), _monitoring("confirm", metrics_file, pushgateway, notify) as metrics:
        settings = _settings(db, venues_config)
        with _open_store(settings) as store:
            run = store.find_run(run_ref)
            if metrics is not None:
                metrics.attach(store, run.id)
            settings = _recorded_settings(run, settings, db, venues_config)
            with _progress(settings) as progress:
                summary = confirm_run(
                    store,
                    settings,
                    run,
                    command_line=_command_line(),
                    confirm_options=DrainOptions(confirm=True, deadline=timeout),
                    views=_watched(progress, metrics),
                )
            _record_metrics(metrics, summary)
            _print_summary(store, summary, as_json=as_json, db_url=settings.db_url)
    sys.exit(summary.exit_code)


def _recorded_settings(
    run: Any, settings: Settings, db: str | None, venues_config: str | None
) -> Settings:
    """Use the venues config the run was started with, unless one is given now."""
    recorded = run.options.get("venues_config")
    if not venues_config and recorded and not os.environ.get("BATCHCANCEL_VENUES"):
        return _settings(db, str(recorded))
    return settings


@cli.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@db_option
@click.option("--json", "as_json", is_flag=True)
def status(run_ref: str | None, db: str | None, as_json: bool) -> None:
    """One run's counts by outcome and state; without RUN, the recent runs."""
    from batchcancel.commands import summarise
    from batchcancel.report import format_counts, iso

    with _errors():
        settings = _settings(db)
        with _open_store(settings) as store:
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
            if run.options.get("all_open"):
                click.echo(
                    "all-open: cancel-all endpoints allowed (they cancel every open order of "
                    "the account)"
                )
            click.echo(f"orders {summary.orders}: {format_counts(summary.outcomes)}")
            click.echo("states: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
            for venue, counts in summary.venues.items():
                click.echo(f"  {venue}: {format_counts(counts)}")


def _run_json(store: Any, run: Any) -> dict[str, Any]:
    from batchcancel.commands import summarise
    from batchcancel.report import iso

    summary = summarise(store, run)
    data = summary.as_json()
    data.pop("elapsed_s")
    data["created_at"] = iso(run.created_at)
    data["finished_at"] = iso(run.finished_at)
    data["states"] = store.state_counts(run.id)
    data["options"] = dict(run.options)  # what the run was started with (never a credential)
    return data


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "html"]), required=True)
@click.option("--attempts", is_flag=True, help="One record per attempt instead of per order.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE")
@click.option(
    "--venues-config",
    envvar="BATCHCANCEL_VENUES",
    metavar="FILE",
    help="html: the venue limits to chart against (default: the config the run recorded).",
)
@db_option
def report(
    run_ref: str,
    fmt: str,
    attempts: bool,
    output: str | None,
    venues_config: str | None,
    db: str | None,
) -> None:
    """Per-order outcomes (or every attempt) of RUN, as CSV or JSON; or an HTML page."""
    from batchcancel.report import write_report

    with _errors():
        settings = _settings(db)
        with _open_store(settings) as store:
            run = store.find_run(run_ref)
            if fmt == "html":
                _html_report(store, run, settings, output, venues_config, attempts=attempts)
            elif output:
                with open(output, "w", encoding="utf-8", newline="") as out:
                    count = write_report(store, run.id, out, fmt=fmt, attempts=attempts)
                click.echo(f"wrote {count} records to {output}", err=True)
            else:
                write_report(store, run.id, sys.stdout, fmt=fmt, attempts=attempts)


def _html_report(
    store: Any,
    run: Any,
    settings: Settings,
    output: str | None,
    venues_config: str | None,
    *,
    attempts: bool,
) -> None:
    """`report RUN --format html`: one self-contained page, written atomically to -o FILE
    (or to stdout). The venue limits it charts against are those of --venues-config (or
    BATCHCANCEL_VENUES), else of the config the run recorded, else the built-in defaults."""
    from batchcancel.commands import summarise
    from batchcancel.report_html import VenueLimit, render_html

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
    limited = load_settings({}, db_url=settings.db_url, venues_config=path)
    limits = {
        name: VenueLimit(v.rate_limit, v.period) for name, v in limited.venues.items()
    }
    redactor = redact.current()
    page, facts = render_html(
        store,
        run.id,
        limits=limits,
        limits_source=source,
        status=summarise(store, run).status.value,
        redactor=redactor,
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
    _log(
        "report",
        f"wrote the HTML report of run {run.id} to {output} ({len(page.encode()) // 1024} KiB, "
        f"{len(facts['venues'])} venues, rendered in {facts['render_seconds']:.2f} s)",
        run_id=run.id,
        bytes=len(page.encode()),
        render_seconds=round(facts["render_seconds"], 3),
    )


@cli.group()
def db() -> None:
    """Audit database maintenance."""


@db.command("upgrade")
@db_option
def db_upgrade(db: str | None) -> None:
    """Create or upgrade the audit schema in --db."""
    with _errors():
        settings = _settings(db)
        with _open_store(settings):
            pass  # opening the store applies the migrations
        click.echo(f"audit database is at the newest schema: {_hide_password(settings.db_url)}")


@cli.command()
def venues() -> None:
    """The venue adapters, their required columns and credential variables (never values)."""
    from batchcancel.venues import VENUES

    for name, venue in VENUES.items():
        columns = ", ".join(sorted(venue.required_columns))
        variables = ", ".join(
            f"{var} ({'set' if os.environ.get(var) else 'not set'})"
            for var in venue.credential_vars
        )
        click.echo(f"{name}: columns {columns}; credentials {variables}")


def _terminated(signum: int, frame: object) -> None:
    # Outside the engine (which handles SIGINT and SIGTERM itself while sending) no request is
    # in flight, and the audit survives a crash at any point (it is built for SIGKILL): stop
    # now, with one line and exit 3. An exception raised from here (KeyboardInterrupt among
    # them) could surface anywhere, and one that escapes makes Python exit by the signal (-2)
    # instead of with SPEC's 3.
    name = signal.Signals(signum).name
    _log(
        "error",
        f"stopped by {name} with no request in flight; the audit holds everything sent and "
        "the run is resumable (the same --run-key, or batchcancel resume RUN)",
        level="error",
        exit_code=3,
    )
    sys.stderr.flush()
    os._exit(3)


def main() -> None:
    """Console-script entry point."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _terminated)
    cli(prog_name="batchcancel")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the order list, audit database and report go.",
)
def demo(out_dir: str) -> None:
    """Cancel a few thousand orders at the five venue simulators, on loopback."""
    from pathlib import Path

    from batchcancel.demo import run_demo

    with _errors():
        click.echo(
            "batchcancel demo: five venue simulators on 127.0.0.1, demo-sized limits", err=True
        )

        def announce(run_id: str, plan: Any) -> None:
            per_venue = ", ".join(f"{v} {n}" for v, n in sorted(plan.to_send.items()))
            _log("planned", f"run {run_id}: cancelling {per_venue}", run_id=run_id)

        from batchcancel.demo import DEMO_PLAN

        limits = {name: (plan.rate_limit, plan.period) for name, plan in DEMO_PLAN.items()}
        with _progress(limits=limits) as progress:
            result = run_demo(Path(out_dir), views=progress, on_planned=announce)
        with _open_store(_settings(result.db_url)) as store:
            _print_summary(store, result.summary, as_json=False, db_url=result.db_url)
        click.echo(f"orders: {result.orders_csv}")
        click.echo(f"report: {result.report_csv}")
        if result.mismatches:
            for line in result.mismatches[:20]:
                click.echo(f"mismatch: {line}", err=True)
            _fail(f"{len(result.mismatches)} outcomes differ from the simulators' books", 1)
        click.echo(
            f"demo: all {result.summary.orders} outcomes match what the simulators were seeded with"
        )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--orders-file",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV (venue, order_id, ...) whose orders start open in the simulators.",
)
def simulate(host: str, port: int, orders_file: str | None) -> None:
    """Serve the five venue simulators until stopped (Ctrl-C)."""
    import secrets
    import threading

    from batchcancel.config import is_loopback
    from batchcancel.simulators import SIMULATORS
    from batchcancel.simulators.base import OrderState
    from batchcancel.simulators.server import serve_in_thread
    from batchcancel.sources import read_csv
    from batchcancel.venues import VENUES

    with _errors():
        credentials = {
            var: f"sim-{secrets.token_hex(8)}"
            for venue in VENUES.values()
            for var in venue.credential_vars
        }
        simulators = {name: cls(credentials=credentials) for name, cls in SIMULATORS.items()}
        if orders_file:
            table = read_csv(orders_file, venue=None)
            for chunk in table.chunks():
                for numbered in chunk:
                    if numbered.row.venue in simulators:
                        simulators[numbered.row.venue].seed(
                            {numbered.row.order_id: OrderState.OPEN}
                        )
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with serve_in_thread(simulators, host=host, port=port) as server:
            click.echo("# venues config (save as venues.toml, pass --venues-config venues.toml):")
            for name, simulator in simulators.items():
                limit = simulator.rate_limit or 0
                click.echo(f'[venues.{name}]\nbase_url = "{server.url(name)}"')
                if not is_loopback(server.host):  # SPEC: plain http elsewhere must be asked for
                    click.echo("allow_insecure = true")
                click.echo(f"rate_limit = {limit}\nperiod = {simulator.period:g}\n")
            click.echo("# simulator credentials (these simulators only):")
            for var, value in credentials.items():
                click.echo(f"export {var}={value}")
            seeded = sum(len(s.book) for s in simulators.values())
            click.echo(
                f"# serving on http://{server.host}:{server.port} with {seeded} open orders; "
                "Ctrl-C stops",
                err=True,
            )
            stop.wait()
