"""The command line (SPEC.md, Commands): the click group, its commands registered from one
small module per group, and the process's entry point. Only the CLI prints or exits.

Every expected failure is a BatchCancelError, printed as one line with its exit code; an
unexpected one is printed as one line too (set BATCHCANCEL_DEBUG=1 for the traceback).
A new command goes in a cli_<group>.py module of its own and is added to COMMAND_MODULES.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from batchcancel import __version__, cli_evidence, cli_read, cli_run, cli_tools
from batchcancel.cli_common import log
from batchcancel.log import StderrLog

__all__ = ["cli", "main"]

COMMAND_MODULES = (cli_run, cli_read, cli_tools, cli_evidence)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchcancel")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the lines on stderr (json: one object per line, for log shippers).",
)
@click.pass_context
def cli(ctx: click.Context, log_format: str) -> None:
    """Cancel trading orders in bulk across venues, with a write-ahead audit trail."""
    ctx.obj = StderrLog(json_lines=log_format == "json")


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def _terminated(signum: int, frame: object) -> None:
    # Outside the engine (which handles SIGINT and SIGTERM itself while sending) no request is
    # in flight, and the audit survives a crash at any point (it is built for SIGKILL): stop
    # now, with one line and exit 3. An exception raised from here (KeyboardInterrupt among
    # them) could surface anywhere, and one that escapes makes Python exit by the signal (-2)
    # instead of with SPEC's 3.
    name = signal.Signals(signum).name
    log()(
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
