"""What every command of the CLI shares: the log from click's context, the one error handler,
the common options, the audit store, the live view and metrics, and the summary's rendering.

The click group (cli.py) puts a StderrLog in ctx.obj; commands find it with `log()`.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from batchcancel import config, contract, redact
from batchcancel.config import Settings
from batchcancel.errors import BatchCancelError
from batchcancel.log import StderrLog

if TYPE_CHECKING:
    from batchcancel.audit.store import AuditStore
    from batchcancel.metrics import Monitor
    from batchcancel.session import ViewCallback
    from batchcancel.summary import Summary

__all__ = [
    "db_option",
    "display",
    "errors",
    "fail",
    "hide_password",
    "lease_option",
    "log",
    "metrics_options",
    "monitoring",
    "open_store",
    "print_summary",
    "record_metrics",
    "settings",
]

F = TypeVar("F", bound=Callable[..., Any])
CONFIRM_TIMEOUT = contract.CONFIRM_TIMEOUT


def log() -> StderrLog:
    """The command's log (ctx.obj, made by the group from --log-format)."""
    context = click.get_current_context(silent=True)
    found = context.find_object(StderrLog) if context is not None else None
    return found if found is not None else StderrLog()


def fail(message: str, code: int) -> NoReturn:
    """One error line on stderr, then exit with SPEC's `code`."""
    log()("error", message, level="error", exit_code=code)
    sys.exit(code)


def install_redactor(settings: Settings | None = None) -> None:
    """Give the command its redactor (SPEC: no credential and no database password leaves the
    process): the credentials of `settings`, else of the environment, and the passwords of the
    database URLs the command was given. Kept in click's context for the command's duration,
    where the log and the progress display find it (redact.current()), rather than in a global."""
    context = click.get_current_context(silent=True)
    params = context.params if context is not None else {}
    if settings is None:
        settings = config.environment_credentials()
    urls = [params.get("db"), params.get("source_db"), settings.db_url if settings else None]
    redact.install(redact.Redactor(settings.secrets if settings else (), urls=urls))


@contextmanager
def errors() -> Iterator[None]:
    """Turn every failure into one line on stderr and SPEC's exit code. An unexpected error
    is one line too (operators read it in a scheduler's log); BATCHCANCEL_DEBUG=1 raises it
    with its traceback."""
    try:
        install_redactor()  # before anything can be said; open_store completes it
        yield
    except BatchCancelError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; whatever is not final is resumable (batchcancel resume RUN)", 3)
    except Exception as exc:
        if config.debug_enabled():
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        debug = config.DEBUG_VAR
        fail(f"internal error: {type(exc).__name__}: {text} (set {debug}=1 for details)", 1)


def settings(db: str | None, venues_config: str | None = None) -> Settings:
    """The command's Settings from its flags and the environment."""
    return config.settings_from_environment(db_url=db, venues_config=venues_config)


@contextmanager
def open_store(settings: Settings) -> Iterator[AuditStore]:
    """The audit store, closed when the block ends; the redactor now knows the settings."""
    from batchcancel.audit.store import AuditStore

    signing_key = None
    if settings.signing_key:
        from batchcancel.audit.signing import load_private_key

        signing_key = load_private_key(settings.signing_key)
    store = AuditStore(settings.db_url, redact=settings.secrets, signing_key=signing_key)
    install_redactor(settings)
    try:
        yield store
    finally:
        store.close()


def command_line() -> str:
    """The command line as the audit records it: each argument redacted before it is quoted,
    so that a password holding a quote or a space is hidden whole."""
    redactor = redact.current()
    return " ".join(shlex.quote(redactor.text(arg)) for arg in ["batchcancel", *sys.argv[1:]])


def hide_password(url: str) -> str:
    """A database URL fit to print: user:pw@, password= parameters and known secrets hidden."""
    return redact.current().text(url)


lease_option = click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="PostgreSQL workers: how long a venue lane stays with a worker that stops renewing it.",
)
db_option = click.option(
    "--db", envvar=config.DB_VAR, metavar="URL", help="Audit database URL [BATCHCANCEL_DB]."
)


def metrics_options(func: F) -> F:
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
def monitoring(
    command: str, metrics_file: str | None, pushgateway: str | None, notify: str | None = None
) -> Iterator[Monitor | None]:
    """The command's metrics and webhook (None when none are asked for): written whatever
    way the command ends, a success recorded only from its summary."""
    if not (metrics_file or pushgateway or notify):
        yield None
        return
    from batchcancel.metrics import Monitor

    say = log()
    metrics = Monitor(
        command,
        textfile=metrics_file,
        pushgateway=pushgateway,
        notify=notify,
        warn=lambda message: say("monitoring", message, level="warning"),
    )
    try:
        yield metrics
    finally:
        metrics.finish()


def record_metrics(metrics: Monitor | None, summary: Summary) -> None:
    """The command's end, for the metrics: success, duration and the summary."""
    if metrics is not None:
        metrics.record(
            success=summary.status.value == "succeeded",
            duration=float(summary.elapsed_s),
            summary=redact.current().value(summary.as_json()),
        )


def progress(
    settings: Settings | None = None, limits: Mapping[str, tuple[int, float]] | None = None
) -> Any:
    """The live view; it shows each venue's configured limit (of `settings`, or `limits`)."""
    from batchcancel.progress import Progress

    if settings is not None:
        limits = {name: (v.rate_limit, v.period) for name, v in settings.venues.items()}
    return Progress(json_lines=log().json_lines, limits=limits)


def display(
    metrics: Monitor | None,
) -> Callable[[Settings], AbstractContextManager[ViewCallback]]:
    """The live view for the settings in use, feeding the metrics too when there are any."""

    @contextmanager
    def opened(settings: Settings) -> Iterator[ViewCallback]:
        with progress(settings) as shown:
            if metrics is None:
                yield shown
                return

            def views(lanes: Any) -> None:
                shown(lanes)
                metrics(lanes)

            yield views

    return opened


def print_summary(store: AuditStore, summary: Summary, *, as_json: bool, db_url: str) -> None:
    """The notices a summary carries (confirm results, fills, orders a cancel-all found),
    then the summary itself on stdout: one JSON object, or SPEC's human lines."""
    from batchcancel.report import format_summary

    say = log()
    if summary.confirm is not None:
        before, after = summary.confirm
        say(
            "confirmed",
            f"confirm: {before} orders were cancel_pending; {before - after} are "
            f"now confirmed final, {after} still pending",
            pending_before=before,
            still_pending=after,
        )
        for venue, order_id in store.filled_while_pending(summary.run_id):
            say(
                "filled",
                f"confirm: {venue} order {order_id} filled before its cancel took effect: "
                "check the position",
                level="warning",
                venue=venue,
                order_id=order_id,
            )
    for venue, count in sorted(store.not_in_input(summary.run_id).items()):
        say(
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
        db_url=hide_password(db_url),
        redactor=redactor,
        digest=summary.digest,
    )
    click.echo("\n".join([*lines, *book_lines(summary.books)]))


def book_lines(books: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """The venues' own books (--from-venues), one line each: the verdict, and its proof."""
    if books is None:
        return []
    lines = ["books (--from-venues):"]
    for venue, book in sorted(books.items()):
        seconds = book["seconds_to_flat"]
        when = f", flat after {seconds:.2f} s" if seconds is not None else ""
        lines.append(
            f"  {venue:<8} {book['verdict']:<9} listed {book['listed']}, cancelled "
            f"{book['cancelled']}, working at the end {book['working_at_end']}{when}"
        )
    return lines
