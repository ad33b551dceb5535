"""The outcome policy of SPEC "Outcomes", pure: an answer's verdict in, a Decision value out.

No asyncio, no store, no pacer: `decide` (a cancel), `decide_confirm` (a status poll) and
`decide_sweep` (a cancel-all answer that lists no order) say what should happen — the order's
outcome, a retry in some seconds, a pause of the venue, a halt, what to count — and the lane
applies it. The only input that is not a value is the jitter's random generator.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Final

from batchcancel.audit.records import CONFIRMED_PREFIX, OrderToSend
from batchcancel.outcomes import Outcome
from batchcancel.venues.base import Verdict, VerdictKind

__all__ = [
    "MAX_BACKOFF",
    "MAX_POLL_DELAY",
    "RATE_LIMIT_ROUNDS",
    "Decision",
    "JobState",
    "Rules",
    "SweepTries",
    "backoff",
    "decide",
    "decide_confirm",
    "decide_sweep",
    "stop_reason",
]

MAX_BACKOFF: Final = 30.0
MAX_POLL_DELAY: Final = 5.0  # seconds between status polls of one order, at most
RATE_LIMIT_ROUNDS: Final = 4  # 429s an order may meet per allowed attempt before it is failed
STILL_PENDING: Final = "cancel still pending at the venue"


@dataclass(frozen=True, slots=True)
class Rules:
    """What the policy needs to know of the venue and the run."""

    venue: str
    max_attempts: int
    cooldown: float  # pause after a 429 without Retry-After
    backoff: float  # first backoff delay, doubled per transient answer
    poll_every: float = 1.0  # first delay between status polls of one order


@dataclass(frozen=True, slots=True)
class JobState:
    """An order being worked in this session."""

    order: OrderToSend
    attempt: int  # number of the last attempt recorded
    tries: int = 0  # transient answers in this session, 429s excluded
    limited: int = 0  # 429s in this session
    polls: int = 0  # confirm: polls that found the cancel still pending
    warned: bool = False  # an escalate-on-repeat answer was seen once
    fresh: bool = True  # not attempted yet in this session: may go in a bulk request


@dataclass(frozen=True, slots=True)
class SweepTries:
    """Answers to one venue's cancel-all requests that listed no order."""

    tries: int = 0
    warned: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one answer. `outcome` None: not final now (retried when `retry_in`
    is set and the lane still runs, else left for a stop to settle)."""

    outcome: Outcome | None
    reason: str = ""
    label: str = ""  # the audit's verdict column for this answer
    retry_in: float | None = None  # send again after this many seconds
    pause_venue_for: float | None = None  # send nothing to the venue for this long
    halt_reason: str = ""  # send nothing more to the venue, for this reason
    rate_limited: bool = False  # count a 429 in the view


def backoff(tries: int, base: float, rng: random.Random) -> float:
    """Exponential backoff (base, doubled per try, at most MAX_BACKOFF) with full jitter
    around it (0.5x to 1.5x)."""
    delay = min(MAX_BACKOFF, base * 2 ** (tries - 1))
    return float(delay * rng.uniform(0.5, 1.5))


def stop_reason(verdict: Verdict) -> str:
    """Why an answer stops the venue: a redirect (the base_url is wrong) or refused credentials."""
    if verdict.redirect:
        return f"stopped: {verdict.reason}"
    return f"credentials refused: {verdict.reason}"


def decide(
    job: JobState, verdict: Verdict, rules: Rules, rng: random.Random
) -> tuple[JobState, Decision]:
    """After a cancel answer: the order's outcome, or a retry, a pause, a halt."""
    escalated = verdict.escalate_on_repeat and job.warned
    if verdict.kind is VerdictKind.AUTH_REFUSED or escalated:
        label = str(VerdictKind.AUTH_REFUSED) if escalated else verdict.label
        if verdict.redirect:  # SPEC: says nothing about the order; resumable once fixed
            reason = f"not cancelled: {rules.venue} {verdict.reason}"
        else:
            reason = f"not sent: {rules.venue} refused the credentials"
        return job, Decision(Outcome.SKIPPED, reason, label=label, halt_reason=stop_reason(verdict))
    if verdict.outcome is not None:
        return job, Decision(verdict.outcome, verdict.reason, label=verdict.label)
    job = dataclasses.replace(job, warned=job.warned or verdict.escalate_on_repeat)
    pause: float | None = None
    if verdict.rate_limited:
        job = dataclasses.replace(job, limited=job.limited + 1)
        pause = _or(verdict.retry_after, rules.cooldown)
        delay = 0.0  # the venue pause holds it back
    else:
        job = dataclasses.replace(job, tries=job.tries + 1)
        delay = _or(verdict.retry_after, backoff(job.tries, rules.backoff, rng))
    limited = verdict.rate_limited
    if job.tries >= rules.max_attempts or job.limited >= RATE_LIMIT_ROUNDS * rules.max_attempts:
        reason = f"gave up after {job.attempt} attempts: {verdict.reason}"
        return job, Decision(
            Outcome.FAILED,
            reason,
            label=verdict.label,
            pause_venue_for=pause,
            rate_limited=limited,
        )
    return job, Decision(
        None, label=verdict.label, retry_in=delay, pause_venue_for=pause, rate_limited=limited
    )


def decide_confirm(
    job: JobState, verdict: Verdict, rules: Rules, rng: random.Random
) -> tuple[JobState, Decision]:
    """After a status answer: confirmed, closed otherwise, or still pending (poll again)."""
    pending = Outcome.CANCEL_PENDING
    label = verdict.label
    if verdict.kind is VerdictKind.AUTH_REFUSED:
        why = stop_reason(verdict)
        return job, Decision(pending, f"not confirmed: {why}", label=label, halt_reason=why)
    if verdict.outcome is not None and verdict.outcome is not pending:
        return job, Decision(verdict.outcome, f"{CONFIRMED_PREFIX}{verdict.reason}", label=label)
    pause: float | None = None
    if verdict.outcome is None:  # transient: the status is unknown
        job = dataclasses.replace(job, tries=job.tries + 1)
        if verdict.rate_limited:
            pause = _or(verdict.retry_after, rules.cooldown)
        if job.tries >= rules.max_attempts:
            reason = f"not confirmed: {verdict.reason}"
            return job, Decision(pending, reason, label=label, pause_venue_for=pause)
        delay = _or(verdict.retry_after, backoff(job.tries, rules.backoff, rng))
    else:
        job = dataclasses.replace(job, polls=job.polls + 1)
        delay = min(MAX_POLL_DELAY, rules.poll_every * 2 ** (job.polls - 1))
    return job, Decision(pending, STILL_PENDING, label=label, retry_in=delay, pause_venue_for=pause)


def decide_sweep(
    state: SweepTries, whole: Verdict, rules: Rules, rng: random.Random
) -> tuple[SweepTries, Verdict, Decision]:
    """After a cancel-all answer that lists no order (`whole`: transient or a refusal): send
    it again after the pause (`retry_in` 0), or give up with the verdict returned (escalated
    to a refusal when it repeats)."""
    state = SweepTries(state.tries + 1, state.warned)
    if whole.escalate_on_repeat and state.warned:
        whole = Verdict.auth_refused(whole.reason)
    state = SweepTries(state.tries, state.warned or whole.escalate_on_repeat)
    pause = _or(whole.retry_after, rules.cooldown) if whole.rate_limited else None
    limited = whole.rate_limited
    if whole.kind is VerdictKind.AUTH_REFUSED or state.tries >= rules.max_attempts:
        return (
            state,
            whole,
            Decision(None, label=whole.label, pause_venue_for=pause, rate_limited=limited),
        )
    if not whole.rate_limited:
        pause = _or(whole.retry_after, backoff(state.tries, rules.backoff, rng))
    decision = Decision(
        None, label=whole.label, retry_in=0.0, pause_venue_for=pause, rate_limited=limited
    )
    return state, whole, decision


def _or(value: float | None, default: float) -> float:
    """`value` unless it is missing; a Retry-After of 0 means "now", not "use the default"."""
    return default if value is None else value
