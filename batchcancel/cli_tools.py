"""The commands that bring their own venues: `demo` (the whole pipeline against the loopback
simulators) and `simulate` (serve the simulators for a manual try)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from batchcancel.cli_common import errors, fail, log, open_store, print_summary, progress, settings

if TYPE_CHECKING:
    from batchcancel.audit.store import AuditStore
    from batchcancel.planning import Plan

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the order list, audit database and report go.",
)
@click.option(
    "--kill",
    "from_books",
    is_flag=True,
    help="The kill switch from the venues' own books instead: list, cancel, list again "
    "until every book is flat (a runaway keeps placing orders at sFOX meanwhile).",
)
def demo(out_dir: str, from_books: bool) -> None:
    """Cancel a few thousand orders at the five venue simulators, on loopback."""
    from batchcancel.demo import DEMO_PLAN, run_demo

    if from_books:
        _kill_demo(Path(out_dir))
        return
    with errors():
        click.echo(
            "batchcancel demo: five venue simulators on 127.0.0.1, demo-sized limits", err=True
        )
        say = log()

        def announce(run_id: str, plan: Plan) -> None:
            per_venue = ", ".join(f"{v} {n}" for v, n in sorted(plan.to_send.items()))
            say("planned", f"run {run_id}: cancelling {per_venue}", run_id=run_id)

        limits = {name: (plan.rate_limit, plan.period) for name, plan in DEMO_PLAN.items()}
        with progress(limits=limits) as shown:
            result = run_demo(Path(out_dir), views=shown, on_planned=announce)
        with open_store(settings(result.db_url)) as store:
            print_summary(store, result.summary, as_json=False, db_url=result.db_url)
        click.echo(f"orders: {result.orders_csv}")
        click.echo(f"report: {result.report_csv}")
        if result.mismatches:
            for line in result.mismatches[:20]:
                click.echo(f"mismatch: {line}", err=True)
            fail(f"{len(result.mismatches)} outcomes differ from the simulators' books", 1)
        click.echo(
            f"demo: all {result.summary.orders} outcomes match what the simulators were seeded with"
        )


def _kill_demo(out_dir: Path) -> None:
    """`demo --kill`: a kill from the five books; its summary and kill report."""
    from batchcancel.demo_kill import KILL_BOOKS, run_kill_demo

    with errors():
        click.echo(
            "batchcancel demo --kill: five venue books on 127.0.0.1 that no input lists, "
            "a runaway placing orders at sFOX",
            err=True,
        )
        say = log()

        def announce(run_id: str, plan: Plan) -> None:
            venues = ", ".join(sorted(KILL_BOOKS))
            say("planned", f"kill {run_id}: from the books of {venues}", run_id=run_id)

        limits = {name: (rate, 1.0) for name, (_, rate) in KILL_BOOKS.items()}
        with progress(limits=limits) as shown:
            result = run_kill_demo(out_dir, views=shown, on_planned=announce)
        with open_store(settings(result.db_url)) as store:
            print_summary(store, result.summary, as_json=False, db_url=result.db_url)
            report = _kill_report(store, result.summary.run_id)
        click.echo("")
        click.echo(report)
        left = {venue: n for venue, n in result.still_working.items() if n}
        if left or not result.summary.flat:
            per_venue = ", ".join(f"{venue} {n}" for venue, n in sorted(left.items()))
            fail(f"not every book is flat: still working {per_venue or 'per the lists'}", 1)
        click.echo(
            f"demo --kill: every book is flat, the runaway's {result.runaway_placed} orders "
            "included; nothing is working at any simulator"
        )


def _kill_report(store: AuditStore, run_id: str) -> str:
    from batchcancel.kill_report import kill_report

    return kill_report(store, run_id, as_json=False)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--orders-file",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV (venue, order_id, ...) whose orders start open in the simulators.",
)
def simulate(host: str, port: int, orders_file: str | None) -> None:
    """Serve the five venue simulators until stopped (Ctrl-C)."""
    from batchcancel.serve_simulators import serve_simulators

    with errors():
        serve_simulators(
            host, port, orders_file, out=click.echo, err=lambda line: click.echo(line, err=True)
        )


COMMANDS = (demo, simulate)
