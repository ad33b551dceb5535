"""Run one venue's share of a job: start its batchcancel process, wait for it (always with a
bound, passing a stop on as SIGTERM), and say what its exit code means for a scheduler:

    0  every order canceled, cancel_pending or already_closed        -> success
       (and, for a job from the venues' books, every book proven flat)
    1  finished, some orders need attention:
         a venue's book not proven flat (from_venues)                -> JobFailed(retryable)
         some still resumable (outcomes.RESUMABLE: failed, skipped)   -> JobFailed(retryable)
         all of them final (not_found, rejected, invalid)            -> JobFailed(not retryable)
    2  usage or input error, nothing sent                            -> JobFailed(not retryable)
    3  stopped early (deadline, SIGTERM), resumable orders left      -> JobFailed(retryable)
    other (crash, signal, no JSON summary)                           -> JobFailed(retryable)

A retry passes the same run key, so batchcancel resumes the same run. Standard library only,
with the package's stdlib-only contract (outcomes, contract, the venue registry).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from batchcancel.jobs.invocation import Invocation, build_invocation
from batchcancel.jobs.jobfile import Job, JobError, load_job
from batchcancel.outcomes import (
    EXIT_ATTENTION,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    RESUMABLE,
    RunStatus,
)

__all__ = ["TERM_GRACE", "JobFailed", "JobResult", "classify", "main", "run_job"]

TERM_GRACE: Final = 30.0  # seconds from SIGTERM to SIGKILL when the runner stops batchcancel


class JobFailed(Exception):
    """batchcancel ended without success; `retryable` says whether a retry can change that."""

    def __init__(self, message: str, *, retryable: bool, result: JobResult | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.result = result


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished batchcancel process."""

    code: int
    summary: dict[str, Any] | None  # the --json summary, when it printed one
    invocation: Invocation


def classify(code: int, summary: Mapping[str, Any] | None) -> tuple[bool, bool, str]:
    """(succeeded, retryable, message) for a batchcancel exit code and its --json summary."""
    counts = ""
    if summary is not None:
        outcomes = {k: v for k, v in (summary.get("outcomes") or {}).items() if v}
        counts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "no orders"
        counts = f" (run {summary.get('run_id')}: {counts})"
    if code == EXIT_OK:
        return True, False, f"succeeded{counts}"
    if code == EXIT_ATTENTION:
        if summary is None:
            return False, True, "batchcancel failed without a summary (exit 1); see its log"
        outcomes = summary.get("outcomes") or {}
        resumable = sum(int(outcomes.get(str(o), 0) or 0) for o in RESUMABLE)
        # orders without any outcome yet (never answered) are resumable too
        resumable += max(0, int(summary.get("orders") or 0) - sum(map(int, outcomes.values())))
        unproven = _books_not_flat(summary)
        if unproven:
            # A retry resumes the run and lists each book again (runaway orders, a list
            # that failed, cancels still pending); the kill report says what remained.
            return (
                False,
                True,
                (
                    f"book not proven flat ({unproven}); a retry lists it again; "
                    f"`batchcancel report {summary.get('run_id')} --format kill` shows what is "
                    f"left{counts}"
                ),
            )
        if resumable or summary.get("status") != RunStatus.ATTENTION:
            return False, True, f"{resumable} orders still resumable; a retry resumes{counts}"
        return False, False, f"orders need attention; all final, a retry cannot help{counts}"
    if code == EXIT_USAGE:
        return False, False, "usage or input error: nothing sent; fix the job or its input"
    if code == EXIT_STOPPED:
        return False, True, f"stopped early with resumable orders left; a retry resumes{counts}"
    if code < 0:
        return False, True, f"batchcancel was killed by signal {-code}; a retry resumes"
    return False, True, f"batchcancel exited {code}; a retry resumes"


def _books_not_flat(summary: Mapping[str, Any]) -> str:
    """The --from-venues verdicts that are not `flat` ("" when every book is, or none was
    listed), e.g. "sfox not_flat"."""
    books = summary.get("books")
    if not isinstance(books, Mapping):
        return ""
    return ", ".join(
        f"{venue} {book.get('verdict')}"
        for venue, book in sorted(books.items())
        if not isinstance(book, Mapping) or book.get("verdict") != "flat"
    )


def run_job(
    job: Job,
    *,
    venue: str,
    key: str,
    environ: Mapping[str, str] | None = None,
    source: str | Path | None = None,
    reason: str | None = None,
    log: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> JobResult:
    """Run batchcancel for one venue of `job`; return on success, raise JobFailed otherwise."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    invocation = build_invocation(
        job,
        venue=venue,
        key=key,
        environ=os.environ if environ is None else environ,
        source=source,
        reason=reason,
    )
    say(f"batchcancel job {job.name}, venue {venue}, run key {key}: {invocation.shown}")
    for warning in invocation.warnings:
        say(f"WARNING: {warning}")
    code, stdout = _execute(invocation, say, timeout or job.wait_bound())
    summary = _summary(stdout)
    result = JobResult(code, summary, invocation)
    if summary is not None:
        say(f"batchcancel summary: {json.dumps(summary, sort_keys=True)}")
    succeeded, retryable, message = classify(code, summary)
    if not succeeded:
        raise JobFailed(f"venue {venue}: {message}", retryable=retryable, result=result)
    say(f"venue {venue}: {message}")
    return result


def _execute(invocation: Invocation, say: Callable[[str], None], bound: float) -> tuple[int, str]:
    """Run the process with its stderr relayed line by line; stop it if it outlives `bound`,
    or if this process is being stopped (SIGTERM to it first, so it records what it sent)."""
    process = subprocess.Popen(
        invocation.argv,
        stdin=subprocess.PIPE if invocation.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(invocation.env),
    )
    chunks: list[bytes] = []
    assert process.stdout is not None and process.stderr is not None
    out_pipe, err_pipe = process.stdout, process.stderr

    def relay() -> None:
        for raw in iter(err_pipe.readline, b""):
            say(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def collect() -> None:
        chunks.append(out_pipe.read())

    threads = [
        threading.Thread(target=relay, daemon=True),
        threading.Thread(target=collect, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        if invocation.stdin is not None and process.stdin is not None:
            try:
                process.stdin.write(invocation.stdin)
            except BrokenPipeError:
                pass  # it exited early (e.g. a usage error): its exit code says why
            finally:
                process.stdin.close()
        try:
            code = process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            say(f"batchcancel still running after {bound:g} s: stopping it (SIGTERM)")
            _stop(process)
            raise JobFailed(
                f"batchcancel did not finish within {bound:g} s; a retry resumes", retryable=True
            ) from None
    except BaseException:
        _stop(process)  # the task is being stopped: let batchcancel record and exit
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
        for pipe in (out_pipe, err_pipe):
            pipe.close()
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _summary(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "run_id" in data:
            return data
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python jobs/run_job.py JOB --venue V --run-key K`: exit code as batchcancel's."""
    parser = argparse.ArgumentParser(description="Run one venue's share of a batchcancel job file.")
    parser.add_argument("job", help="job file (TOML)")
    parser.add_argument("--venue", required=True)
    parser.add_argument("--run-key", required=True)
    parser.add_argument(
        "--source", help="CSV order list instead of the job's source (inside its source_dir)"
    )
    parser.add_argument("--reason")
    args = parser.parse_args(argv)
    try:
        job = load_job(args.job)
        result = run_job(
            job, venue=args.venue, key=args.run_key, source=args.source, reason=args.reason
        )
    except JobError as exc:
        print(f"run_job: error: {exc}", file=sys.stderr)
        return 2
    except JobFailed as exc:
        print(f"run_job: {exc}", file=sys.stderr)
        return exc.result.code if exc.result is not None and exc.result.code > 0 else 3
    if result.summary is not None:
        print(json.dumps(result.summary))
    return 0
