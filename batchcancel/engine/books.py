"""`--from-venues`: a lane cancels from its venue's own book until the book is proven flat.

Each round lists the first page of every walk (VENUES.md: later pages shift under our own
cancels, so they may show work but never prove anything), records each working order in scope
as an order of the run (one order when the input named it too), lets the lane's dispatch loop
cancel whatever is unsent, and lists again. It ends when a round's first pages are all
complete with nothing working in scope (`flat`), when only cancels still pending at the venue
remain and stop changing (`draining`), or when nothing more can be done (`not_flat`: working
orders that will not go, a venue that cannot be listed, the deadline). Every list request is
written ahead (requests table, kind `list`) and paced by the venue's window, and by the list
route's own window where it has one (sFOX); a 429 on that route pauses only the route.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, cast

from batchcancel.audit.ports import BookStore
from batchcancel.audit.records import DONE, LIST, BookRecord, KnownOrder
from batchcancel.drain_types import BooksScope, BookView, stamp
from batchcancel.engine.core import LaneCore
from batchcancel.engine.exchange import Exchange, Heard
from batchcancel.engine.policy import SweepTries, decide_sweep
from batchcancel.engine.work import LOAD_POLL
from batchcancel.errors import AuditError, LaneLostError
from batchcancel.outcomes import Outcome
from batchcancel.pacing import Pacer
from batchcancel.venues.base import (
    LIST_MAX_BODY,
    CancelRequest,
    ListAnswer,
    ListPage,
    ListTarget,
    ListVenue,
    Reply,
    Verdict,
    VerdictKind,
)

__all__ = ["BookWalk"]

# A first page full of orders whose cancel is already under way (Crux lists them as working
# until the supplier confirms) hides the rest of the book: read on, this many pages a round.
PAGES_PER_ROUND: Final = 20
# Seconds a book that lists only what cannot change by our hand (pending cancels, orders we
# were told are gone) is listed again before the lane gives its verdict; never past a deadline.
PATIENCE: Final = 10.0
FIRST_PAUSE: Final = 0.25  # seconds before such a book is listed again (doubling, at most 2 s)
MAX_PAUSE: Final = 2.0
RECHECK_EVERY: Final = 0.25  # seconds between lists of a flat book while others are worked
_CANCELLED: Final = frozenset({Outcome.CANCELED.value, Outcome.CANCEL_PENDING.value})


class _Sent(NamedTuple):
    """A list request that left: its reply (None: no answer came), what was heard, and the
    key of its write-ahead row (the `listed_by` of the orders it shows)."""

    reply: Reply | None
    heard: Heard
    request_pk: int


@dataclass
class _Walked:
    """What one round's listing of one walk found."""

    proof: bool = False  # the first page was usable and complete
    to_cancel: int = 0  # working orders the run still has to send
    waiting: list[str] = field(default_factory=list)  # working, cancel under way at the venue
    stuck: list[str] = field(default_factory=list)  # working though the run holds them final
    failure: str = ""  # why it could not be listed

    @property
    def working(self) -> int:
        return self.to_cancel + len(self.waiting) + len(self.stuck)


class BookWalk:
    """One lane's rounds of list, cancel, list again, and the verdict they reach."""

    def __init__(
        self,
        core: LaneCore,
        exchange: Exchange,
        scope: BooksScope,
        view: BookView,
        others_busy: Callable[[], bool] = lambda: False,
    ):
        self.core = core
        self.exchange = exchange
        self.scope = scope
        self.view = view
        self.venue = cast(ListVenue, core.venue)
        self.store = cast(BookStore, core.store)
        limit = self.venue.list_limit
        # While other books of the run are still being worked, a flat one is listed again
        # now and then: a runaway placing orders there meanwhile is cancelled too.
        self.others_busy = others_busy
        limit = self.venue.list_limit
        # Never faster than the list route's own limit allows (sFOX: one a second).
        self.recheck_every = max(
            RECHECK_EVERY, limit.period / limit.rate_limit if limit is not None else 0.0
        )
        self.route = (
            Pacer(
                rate_limit=limit.rate_limit,
                period=limit.period,
                max_in_flight=1,
                clock=core.clock.monotonic,
                sleep=core.options.sleep,
            )
            if limit is not None
            else None
        )
        self.record = BookRecord(venue=core.name, verdict="not_flat")
        self.seen: set[str] = set()
        self.seen_in_input: set[str] = set()
        wanted = {"account_id": scope.accounts, "symbol": scope.symbols, "side": scope.side}
        self._blind = sorted(k for k, v in wanted.items() if v and k not in self.venue.list_fields)

    async def run(self, dispatch: Callable[[], Awaitable[None]]) -> None:
        """List and cancel until the book's verdict is reached; `dispatch` sends whatever
        the run holds unsent for the venue and waits for the answers."""
        core = self.core
        started = core.clock.monotonic()
        self.record = BookRecord(venue=core.name, verdict="not_flat", started_at=stamp(core.clock))
        route_halts = (
            asyncio.create_task(self._halt_route_with_lane()) if self.route is not None else None
        )
        try:
            await self._rounds(dispatch, started)
        finally:
            if route_halts is not None:
                route_halts.cancel()

    async def _halt_route_with_lane(self) -> None:
        """A halt (deadline, signal) also ends a wait for the list route's window."""
        assert self.route is not None
        await self.core.pacer.wait_halted()
        self.route.halt()

    async def _rounds(self, dispatch: Callable[[], Awaitable[None]], started: float) -> None:
        core = self.core
        quiet_since: float | None = None
        pause = FIRST_PAUSE
        last: list[_Walked] = []  # the last round that listed every walk
        targets: list[ListTarget] | None = None  # known once the first round has begun
        why = ""
        while not core.pacer.halted and targets != []:
            # What the run holds unsent (the input's orders; those the last lists found) goes
            # out while the books are listed: a large input does not hold up the lists, and a
            # list route paused by its 429 holds up no cancel (VENUES.md: that route only).
            listing = asyncio.create_task(self._round(targets))
            try:
                await dispatch()
                targets, why, walked = await listing
            finally:
                listing.cancel()
            if core.pacer.halted or not targets:
                break
            last = walked
            await dispatch()
            if all(w.proof and not w.working and not w.failure for w in walked):
                if self.view.verdict != "flat":  # a new proof; a re-check keeps the first
                    self.view.seconds_to_flat = core.clock.monotonic() - started
                    self.record = _with(self.record, flat_at=stamp(core.clock))
                self.view.verdict = "flat"
                if not self.others_busy():
                    await self._finish("flat", walked)
                    return
                quiet_since, pause = None, FIRST_PAUSE
                await core.queue.wait(self.recheck_every)  # a halt wakes it
                continue
            self.view.verdict = "not_flat"
            if any(w.to_cancel for w in walked):
                quiet_since, pause = None, FIRST_PAUSE  # progress: list again at once
                continue
            now = core.clock.monotonic()
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= PATIENCE:
                break
            await core.queue.wait(pause)  # a halt (deadline, signal) wakes it
            pause = min(pause * 2, MAX_PAUSE)
        if targets == []:
            await dispatch()  # the input's orders are cancelled all the same
            self.view.detail = why
        if self.view.verdict == "flat" and last and all(not w.working for w in last):
            await self._finish("flat", last)  # stopped while re-checking a flat book
            return
        self.view.seconds_to_flat = None
        await self._finish(self._final_word(last), last)

    async def _round(
        self, targets: list[ListTarget] | None
    ) -> tuple[list[ListTarget], str, list[_Walked]]:
        """One round: the first page of every walk, in turn (until a halt); the walks are
        worked out first in the first round. (walks, why there are none, what they found)"""
        why = ""
        if targets is None:
            targets, why = await self._targets()
        walked = []
        for target in targets:
            walked.append(await self._walk(target))
            if self.core.pacer.halted:
                break
        return targets, why, walked

    # -- what to list -----------------------------------------------------------------------

    async def _targets(self) -> tuple[list[ListTarget], str]:
        """The walks that cover the scope, with what the venue needs to be listed at all
        (ETNA account ids, ZebPay symbols) from the scope, the input or the venues config."""
        core, venue, scope = self.core, self.venue, self.scope
        accounts, symbols = list(scope.accounts), list(scope.symbols)
        needs_input = (venue.list_needs_account and not accounts) or (
            venue.list_needs_symbol and not symbols
        )
        if needs_input:
            while core.more_coming() and not core.pacer.halted:
                await core.queue.wait(LOAD_POLL)  # the input's accounts and symbols
            try:
                in_accounts, in_symbols = await core.options.offload(
                    self.store.scope_values, core.run_id, core.name
                )
            except AuditError as exc:
                core.on_audit_failure(exc)
                return [], "the audit database failed"
            if venue.list_needs_account and not accounts:
                accounts = list(dict.fromkeys([*core.settings.accounts, *in_accounts]))
            if venue.list_needs_symbol and not symbols:
                symbols = list(dict.fromkeys([*core.settings.symbols, *in_symbols]))
                if not symbols:
                    symbols = await self._markets()
        targets = venue.list_targets(accounts=accounts, symbols=symbols, side=scope.side)
        if targets:
            return targets, ""
        if venue.list_needs_account and not accounts:
            return [], (
                f"{core.name} cannot be listed without account ids: give --account, or "
                f"accounts = [...] in [venues.{core.name}], or orders in the input"
            )
        if venue.list_needs_symbol and not symbols:
            return [], f"{core.name} cannot be listed: no symbols (input, config or markets)"
        return [], f"{core.name} cannot be listed within this scope"

    async def _markets(self) -> list[str]:
        """ZebPay's symbols from its markets endpoint, when nothing else names them."""
        build = getattr(self.venue, "build_markets", None)
        read = getattr(self.venue, "classify_markets", None)
        if build is None or read is None:
            return []
        for _ in range(self.core.options.max_attempts):
            request = build(now=self.core.clock.wall())
            sent = await self._send(request, "markets")
            if sent is None:
                return []
            if sent.reply is not None:
                verdict, symbols = read(sent.reply)
                if verdict is None:
                    return list(symbols)
            await self.core.queue.wait(FIRST_PAUSE)
        return []

    # -- one walk ---------------------------------------------------------------------------

    async def _walk(self, target: ListTarget) -> _Walked:
        """List the walk's first page (and, while it shows nothing left to send, the pages
        after it); what the first page proves, and the orders found."""
        walked = _Walked()
        page: ListPage | None = ListPage(target)
        number = 0
        while page is not None and number < PAGES_PER_ROUND and not self.core.pacer.halted:
            listed = await self._list(page, number)
            answer = listed[0] if listed is not None else None
            if listed is None or answer is None or not answer.usable:
                if number == 0:
                    walked.failure = (
                        answer.verdict.reason
                        if answer is not None and answer.verdict is not None
                        else self.core.view.halted or "not listed"
                    )
                return walked
            found = await self._record_listed(answer, listed[1])
            if found is None:
                return walked
            if number == 0:
                # A filter the venue's rows cannot carry (a symbol at Crux) proves nothing
                # while rows it cannot place are listed.
                walked.proof = answer.complete and not (answer.out_of_scope and self._blind)
                if answer.out_of_scope and self._blind:
                    walked.failure = (
                        f"{answer.out_of_scope} working orders whose {'/'.join(self._blind)} "
                        f"{self.core.name} does not show"
                    )
            for order in found:
                if order.state != DONE:
                    walked.to_cancel += 1
                elif order.outcome == Outcome.CANCEL_PENDING.value:
                    walked.waiting.append(order.order_id)
                else:
                    walked.stuck.append(order.order_id)
            if walked.to_cancel or answer.complete:
                return walked
            page, number = answer.next, number + 1
        return walked

    async def _list(self, page: ListPage, number: int) -> tuple[ListAnswer, int] | None:
        """One list request, retried as the policy says: its answer and the key of the
        request that brought it; None when the lane halted or nothing came back (then the
        venue cannot be proven flat)."""
        core = self.core
        tries = SweepTries()
        while True:
            request = self.venue.build_list(page, now=core.clock.wall())
            label = _label(page, number)
            sent = await self._send(request, label)
            if sent is None:
                return None
            reply, heard = sent.reply, sent.heard
            answer = self.venue.classify_list(page, reply) if reply is not None else None
            verdict = answer.verdict if answer is not None else Verdict.transient(heard.detail)
            if verdict is None:
                assert answer is not None
                return answer, sent.request_pk
            if verdict.kind is VerdictKind.AUTH_REFUSED:
                core.halt(verdict.reason)  # SPEC: an auth refusal stops the venue at once
                return (answer or ListAnswer.failed(verdict)), sent.request_pk
            if verdict.rate_limited and self.route is not None:
                # sFOX: a 429 on the list route pauses that route only (VENUES.md).
                limit = self.venue.list_limit
                assert limit is not None
                self.route.pause(max(verdict.retry_after or 0.0, limit.cooldown))
                core.view.rate_limited += 1
                tries = SweepTries(tries.tries + 1, tries.warned)
                if tries.tries >= core.options.max_attempts:
                    return (answer or ListAnswer.failed(verdict)), sent.request_pk
                continue
            tries, verdict, decision = decide_sweep(tries, verdict, core.rules, core.rng)
            core.control(None, decision, count_retry=True)
            if decision.retry_in is None:
                return (answer or ListAnswer.failed(verdict)), sent.request_pk

    async def _send(self, request: CancelRequest, label: str) -> _Sent | None:
        """Write the request ahead, send it in a slot of the route (if any) and of the venue,
        record its answer; None when nothing was sent."""
        core = self.core
        route = await self.route.grant() if self.route is not None else None
        if self.route is not None and route is None:
            return None
        try:
            slot = await core.pacer.grant()
            if slot is None:
                return None
            with slot:
                try:
                    record = await core.options.offload(
                        core.store.begin_request, core.run_id, core.name, kind=LIST, target=label
                    )
                except LaneLostError:
                    core.on_lost(core.name)
                    return None
                except AuditError as exc:
                    core.on_audit_failure(exc)
                    return None
                self.view.lists += 1
                if self.record.first_request_at is None:
                    self.record = _with(self.record, first_request_at=stamp(core.clock))
                reply, heard = await self.exchange.send(request, slot, max_body=LIST_MAX_BODY)
            if route is not None:
                route.answered()
        finally:
            if route is not None:
                route.close()
        self.record = _with(self.record, last_answer_at=heard.answered_at)
        verdict = "answered" if reply is not None and 200 <= reply.status < 300 else "transient"
        try:
            await core.options.offload(
                core.store.answer_request,
                record,
                answered_at=heard.answered_at,
                http_status=heard.status,
                verdict=verdict,
                latency_ms=heard.latency_ms,
                detail=heard.detail,
            )
        except AuditError as exc:
            core.on_audit_failure(exc)
            return None
        return _Sent(reply, heard, record)

    async def _record_listed(self, answer: ListAnswer, request_pk: int) -> list[KnownOrder] | None:
        """The run's orders for the working orders a page showed (new ones recorded now)."""
        core = self.core
        if not answer.orders:
            return []
        listed = [(o.order_id, o.account_id, o.symbol) for o in answer.orders]
        try:
            known = await core.options.offload(
                self.store.add_listed, core.run_id, core.name, request_pk, listed
            )
        except LaneLostError:
            core.on_lost(core.name)
            return None
        except AuditError as exc:
            core.on_audit_failure(exc)
            return None
        added = sum(order.added for order in known)
        if added:
            core.view.total += added
            core.queue.look_again()
        for order in known:
            self.seen.add(order.order_id)
            if order.from_input:
                self.seen_in_input.add(order.order_id)
        return known

    # -- the verdict ------------------------------------------------------------------------

    def _final_word(self, walked: list[_Walked]) -> str:
        """The verdict of a lane that stopped listing without a flat round: `draining` when
        its last full round showed only cancels still pending at the venue."""
        if walked and all(
            w.proof and not w.failure and not w.stuck and not w.to_cancel for w in walked
        ):
            return "draining"
        return "not_flat"

    def _why(self, word: str, walked: list[_Walked]) -> str:
        """Why the book is not flat, for a human."""
        failures = [w.failure for w in walked if w.failure]
        stuck = [order for w in walked for order in w.stuck]
        if failures:
            return f"could not be listed completely: {failures[0]}"
        if self.core.view.halted:
            return f"stopped: {self.core.view.halted}"
        if stuck:
            return f"still listed as working after their cancel: {', '.join(stuck[:5])}"
        if not walked:
            return "never listed completely"
        if any(not w.proof for w in walked):
            return "the first page was never complete"
        if word == "draining":
            return "cancels still pending at the venue"
        return "working orders remain"

    async def _finish(self, word: str, walked: list[_Walked]) -> None:
        """Count what the run cancelled at the venue and write the verdict."""
        core, view = self.core, self.view
        view.verdict = word
        view.listed = len(self.seen)
        view.from_input = len(self.seen_in_input)
        view.working_at_end = 0 if word == "flat" else sum(w.working for w in walked)
        if word != "flat" and not view.detail:
            view.detail = self._why(word, walked)
        try:
            await core.writer.flush()
            counts = await core.options.offload(self.store.counts, core.run_id)
            outcomes = counts.get(core.name, {})
            view.cancelled = sum(outcomes.get(o, 0) for o in _CANCELLED)
            self.record = _with(
                self.record,
                verdict=view.verdict,
                listed=view.listed,
                from_input=view.from_input,
                cancelled=view.cancelled,
                working_at_end=view.working_at_end,
                lists=view.lists,
                seconds_to_flat=view.seconds_to_flat,
                detail=view.detail,
            )
            await core.options.offload(self.store.record_book, core.run_id, self.record)
        except LaneLostError:
            core.on_lost(core.name)
        except AuditError as exc:
            core.on_audit_failure(exc)


def _label(page: ListPage, number: int) -> str:
    """The list request as its audit row names it."""
    target = page.target
    parts = [
        f"{name} {value}"
        for name, value in (
            ("account", target.account_id),
            ("symbol", target.symbol),
            ("side", target.side),
            ("state", target.state),
        )
        if value
    ]
    where = " ".join(parts) or "book"
    return f"{where} page {number + 1}" + (f" (cursor {page.cursor})" if page.cursor else "")


def _with(record: BookRecord, **changes: Any) -> BookRecord:
    return dataclasses.replace(record, **changes)
