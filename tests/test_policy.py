"""The outcome policy (SPEC "Outcomes") as tables: a verdict in, a Decision out, no I/O."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from batchcancel.audit.records import CONFIRMED_PREFIX, OrderToSend
from batchcancel.engine.policy import (
    MAX_BACKOFF,
    RATE_LIMIT_ROUNDS,
    Decision,
    JobState,
    Rules,
    SweepTries,
    backoff,
    decide,
    decide_confirm,
    decide_sweep,
)
from batchcancel.outcomes import Outcome
from batchcancel.venues.base import Verdict, VerdictKind

RULES = Rules(venue="sfox", max_attempts=3, cooldown=7.0, backoff=0.5, poll_every=1.0)
ORDER = OrderToSend(pk=1, venue="sfox", order_id="42", account_id="", symbol="", attempts=0)


def job(**changes: Any) -> JobState:
    return dataclasses.replace(JobState(ORDER, attempt=1), **changes)


def rng() -> random.Random:
    return random.Random(7)


REDIRECT = Verdict(
    VerdictKind.AUTH_REFUSED, reason="redirected to https://elsewhere (301)", redirect=True
)
ESCALATING = Verdict(VerdictKind.TRANSIENT, reason="unauthorized?", escalate_on_repeat=True)


class TestDecideFinal:
    """A final verdict is the order's outcome, whatever the job's history."""

    @pytest.mark.parametrize(
        "outcome",
        [
            Outcome.CANCELED,
            Outcome.CANCEL_PENDING,
            Outcome.ALREADY_CLOSED,
            Outcome.NOT_FOUND,
            Outcome.REJECTED,
        ],
    )
    def test_final_verdict_is_the_outcome(self, outcome: Outcome) -> None:
        state, decision = decide(job(tries=2), Verdict.final(outcome, "said so"), RULES, rng())
        assert decision == Decision(outcome, "said so", label=str(outcome))
        assert state == job(tries=2)


class TestDecideRefusals:
    """A refusal or a redirect skips the order and halts the venue at once (SPEC)."""

    def test_auth_refused_skips_and_halts(self) -> None:
        _, decision = decide(job(), Verdict.auth_refused("401 Unauthorized"), RULES, rng())
        assert decision.outcome is Outcome.SKIPPED
        assert decision.reason == "not sent: sfox refused the credentials"
        assert decision.halt_reason == "credentials refused: 401 Unauthorized"
        assert decision.label == "auth_refused"
        assert decision.retry_in is None

    def test_redirect_names_the_location_and_halts(self) -> None:
        _, decision = decide(job(), REDIRECT, RULES, rng())
        assert decision.outcome is Outcome.SKIPPED
        assert decision.reason == "not cancelled: sfox redirected to https://elsewhere (301)"
        assert decision.halt_reason == "stopped: redirected to https://elsewhere (301)"

    def test_escalate_on_repeat_is_transient_once_then_a_refusal(self) -> None:
        first_state, first = decide(job(), ESCALATING, RULES, rng())
        assert first.outcome is None and first.retry_in is not None and not first.halt_reason
        assert first_state.warned
        _, second = decide(first_state, ESCALATING, RULES, rng())
        assert second.outcome is Outcome.SKIPPED
        assert second.label == "auth_refused"  # the audit says what it was taken for
        assert second.halt_reason == "credentials refused: unauthorized?"


class TestDecideTransient:
    """Transient answers retry with backoff, honour Retry-After, fail when attempts run out."""

    def test_transient_retries_after_a_jittered_backoff(self) -> None:
        state, decision = decide(job(), Verdict.transient("HTTP 503"), RULES, rng())
        assert decision.outcome is None
        assert decision.label == "transient"
        assert decision.retry_in == backoff(1, RULES.backoff, rng())
        assert 0.25 <= (decision.retry_in or 0) <= 0.75
        assert decision.pause_venue_for is None and not decision.rate_limited
        assert state.tries == 1

    @pytest.mark.parametrize("after", [0.0, 2.5])
    def test_retry_after_wins_over_backoff(self, after: float) -> None:
        """Retry-After: 0 means now, not "use the default"."""
        _, decision = decide(job(), Verdict.transient("503", retry_after=after), RULES, rng())
        assert decision.retry_in == after

    def test_last_allowed_attempt_fails_the_order(self) -> None:
        state, decision = decide(
            job(tries=2, attempt=3), Verdict.transient("HTTP 500"), RULES, rng()
        )
        assert decision.outcome is Outcome.FAILED
        assert decision.reason == "gave up after 3 attempts: HTTP 500"
        assert decision.retry_in is None
        assert state.tries == 3

    def test_a_429_pauses_the_venue_for_the_cooldown_and_retries_at_once(self) -> None:
        state, decision = decide(job(), Verdict.transient("429", rate_limited=True), RULES, rng())
        assert decision.pause_venue_for == RULES.cooldown
        assert decision.retry_in == 0.0  # the venue pause holds it back
        assert decision.rate_limited
        assert state.limited == 1 and state.tries == 0  # 429s do not use up attempts

    def test_a_429_with_retry_after_pauses_for_that_long(self) -> None:
        verdict = Verdict.transient("429", rate_limited=True, retry_after=12.0)
        _, decision = decide(job(), verdict, RULES, rng())
        assert decision.pause_venue_for == 12.0

    def test_endless_429s_fail_the_order_eventually(self) -> None:
        limit = RATE_LIMIT_ROUNDS * RULES.max_attempts
        verdict = Verdict.transient("429", rate_limited=True)
        state, decision = decide(job(limited=limit - 1), verdict, RULES, rng())
        assert decision.outcome is Outcome.FAILED
        assert decision.pause_venue_for == RULES.cooldown  # the venue still pauses
        assert decision.rate_limited
        assert state.limited == limit


class TestDecideConfirm:
    """A status poll confirms, finds the order closed otherwise, or polls again."""

    def test_canceled_is_confirmed(self) -> None:
        verdict = Verdict.final(Outcome.CANCELED, "status Canceled")
        _, decision = decide_confirm(job(), verdict, RULES, rng())
        assert decision.outcome is Outcome.CANCELED
        assert decision.reason == f"{CONFIRMED_PREFIX}status Canceled"
        assert decision.retry_in is None

    @pytest.mark.parametrize(("polls", "delay"), [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (9, 5.0)])
    def test_still_pending_polls_again_doubling_up_to_5s(self, polls: int, delay: float) -> None:
        verdict = Verdict.final(Outcome.CANCEL_PENDING, "Cancel Pending")
        state, decision = decide_confirm(job(polls=polls), verdict, RULES, rng())
        assert decision.outcome is Outcome.CANCEL_PENDING
        assert decision.reason == "cancel still pending at the venue"
        assert decision.retry_in == delay
        assert state.polls == polls + 1

    def test_refusal_halts_and_leaves_it_pending(self) -> None:
        _, decision = decide_confirm(job(), Verdict.auth_refused("401"), RULES, rng())
        assert decision.outcome is Outcome.CANCEL_PENDING
        assert decision.reason == "not confirmed: credentials refused: 401"
        assert decision.halt_reason == "credentials refused: 401"
        assert decision.retry_in is None

    def test_transient_retries_then_gives_up_pending(self) -> None:
        verdict = Verdict.transient("timeout")
        _, first = decide_confirm(job(), verdict, RULES, rng())
        assert first.retry_in == backoff(1, RULES.backoff, rng())
        _, last = decide_confirm(job(tries=2), verdict, RULES, rng())
        assert last.outcome is Outcome.CANCEL_PENDING
        assert last.reason == "not confirmed: timeout"
        assert last.retry_in is None

    def test_a_429_pauses_the_venue_but_is_not_counted_as_a_cancel_429(self) -> None:
        verdict = Verdict.transient("429", rate_limited=True)
        _, decision = decide_confirm(job(), verdict, RULES, rng())
        assert decision.pause_venue_for == RULES.cooldown
        assert not decision.rate_limited


class TestDecideSweep:
    """A cancel-all answer that lists nothing: send it again after a pause, or give up."""

    def test_transient_pauses_with_backoff_and_sends_again(self) -> None:
        state, whole, decision = decide_sweep(
            SweepTries(), Verdict.transient("HTTP 502"), RULES, rng()
        )
        assert state == SweepTries(1, False)
        assert decision.retry_in == 0.0
        assert decision.pause_venue_for == backoff(1, RULES.backoff, rng())
        assert whole.kind is VerdictKind.TRANSIENT

    def test_a_429_pauses_for_the_cooldown_and_counts(self) -> None:
        verdict = Verdict.transient("429", rate_limited=True)
        _, _, decision = decide_sweep(SweepTries(), verdict, RULES, rng())
        assert decision.pause_venue_for == RULES.cooldown
        assert decision.rate_limited and decision.retry_in == 0.0

    def test_refusal_gives_up_at_once(self) -> None:
        _, whole, decision = decide_sweep(SweepTries(), Verdict.auth_refused("401"), RULES, rng())
        assert decision.retry_in is None
        assert whole.kind is VerdictKind.AUTH_REFUSED

    def test_repeated_escalating_answer_becomes_a_refusal(self) -> None:
        state, _, first = decide_sweep(SweepTries(), ESCALATING, RULES, rng())
        assert first.retry_in == 0.0 and state.warned
        _, whole, second = decide_sweep(state, ESCALATING, RULES, rng())
        assert whole.kind is VerdictKind.AUTH_REFUSED
        assert second.retry_in is None

    def test_attempts_run_out(self) -> None:
        _, whole, decision = decide_sweep(SweepTries(2), Verdict.transient("500"), RULES, rng())
        assert decision.retry_in is None
        assert whole.reason == "500"


class TestBackoff:
    """Exponential, capped, with jitter from the generator given (reproducible by seed)."""

    @pytest.mark.parametrize(("tries", "centre"), [(1, 0.5), (2, 1.0), (3, 2.0), (12, MAX_BACKOFF)])
    def test_doubles_per_try_within_jitter(self, tries: int, centre: float) -> None:
        delays = [backoff(tries, 0.5, random.Random(seed)) for seed in range(50)]
        assert all(0.5 * centre <= d <= 1.5 * centre for d in delays)
        assert len(set(delays)) > 1

    def test_same_seed_same_delay(self) -> None:
        assert backoff(3, 0.5, random.Random(1)) == backoff(3, 0.5, random.Random(1))
