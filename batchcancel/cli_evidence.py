"""The evidence commands: `verify` and `export` (SPEC, Evidence and monitoring).

`verify RUN` recomputes the run's hash chains from the database and checks every row against
them, and the signature of the sealed digest where there is one; `verify --file` checks an
export alone; `verify RUN --against FILE` shows that the database still holds an earlier
export unchanged. Exit 0 with `intact: N facts, digest D`; exit 1 naming the first fact that
does not match. `export RUN -o FILE` writes every fact with its chain as JSON lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from batchcancel.cli_common import db_option, errors, open_store, settings
from batchcancel.errors import InputError

if TYPE_CHECKING:
    from batchcancel.audit.store import AuditStore

__all__ = ["COMMANDS"]


@click.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option(
    "--file",
    "export_file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Check an export on its own, with no database.",
)
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Also check that the database still holds this earlier export unchanged.",
)
@db_option
def verify(
    run_ref: str | None, export_file: str | None, against: str | None, db: str | None
) -> None:
    """Recompute a run's hash chains (or an export's): exit 0 intact, 1 naming the first fact
    that does not match."""
    from batchcancel.audit import verify as checks

    with errors():
        if (run_ref is None) == (export_file is None):
            raise InputError("verify: give a RUN, or --file FILE (not both)")
        if export_file is not None:
            verdict = checks.verify_file(Path(export_file))
            _say(verdict.line(), intact=verdict.intact)
        with open_store(settings(db)) as store:
            run = store.find_run(run_ref or "")
            if against is not None:
                verdict = checks.verify_against(store.engine, run.id, Path(against))
            else:
                verdict = checks.verify_run(store.engine, run.id)
            if not verdict.intact:
                _say(verdict.line(), intact=False)
            problem = _sealed_problem(store, run.id, verdict.digest)
            if problem:
                _say(f"not intact: {problem}", intact=False)
            sealed = store.sealed(run.id)
            signed = (
                f"; signature valid (Ed25519 public key {sealed.public_key})"
                if sealed.signature
                else ""
            )
            _say(verdict.line() + signed, intact=True)


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE", required=True
)
@db_option
def export(run_ref: str, output: str, db: str | None) -> None:
    """Write every recorded fact of RUN with its chain, as JSON lines (see verify --file)."""
    from batchcancel.audit.verify import export_run

    with errors(), open_store(settings(db)) as store:
        run = store.find_run(run_ref)
        verdict = export_run(store.engine, run.id, Path(output))
    click.echo(
        f"exported {verdict.facts} facts of run {run.id} to {output}, digest {verdict.digest}"
    )
    if not verdict.intact:
        _say(verdict.line(), intact=False)


def _sealed_problem(store: AuditStore, run_id: str, digest: str) -> str:
    """A finished run's sealed digest must be the one its chains give now, and its signature
    must verify with the public key recorded beside it."""
    status = store.find_run(run_id).status
    sealed = store.sealed(run_id)
    if sealed.digest and sealed.digest != digest and status not in ("loading", "running"):
        return (
            f"runs {run_id}: the digest sealed at the end of its last session is "
            f"{sealed.digest}, its chains now give {digest} (rewritten)"
        )
    if sealed.signature and sealed.digest:
        from batchcancel.audit.signing import verify_signature

        if not verify_signature(sealed.public_key or "", sealed.digest, sealed.signature):
            return f"runs {run_id}: the signature of the sealed digest does not verify"
    return ""


def _say(line: str, *, intact: bool) -> NoReturn:
    click.echo(line)
    raise SystemExit(0 if intact else 1)


COMMANDS = (verify, export)
