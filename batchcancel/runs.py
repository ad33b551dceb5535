"""The run lifecycle, decided once: new run, finish loading, resume by key, dry run on an
existing key, or join a run another process just recorded; what a run records of its options
and what a resume restores from them.

`run`/`kill`, `resume` and `confirm` each make one call here. These functions return a
Summary and raise BatchCancelError; what they have to say goes through the `Watch` the CLI
hands in (its log, its live view, its metrics), never to the terminal directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batchcancel import config, contract
from batchcancel.audit.records import LOADING, RunInfo
from batchcancel.audit.store import AuditStore
from batchcancel.config import Settings
from batchcancel.drain_types import BooksScope, DrainOptions
from batchcancel.errors import ConfigError, RunKeyTakenError, RunNotFoundError
from batchcancel.log import Log
from batchcancel.outcomes import RunStatus
from batchcancel.planning import (
    DEFAULT_MAX_ATTEMPTS,
    KILL_DEADLINE,
    KILL_MAX_ATTEMPTS,
    Plan,
    estimates,
    kill_profile,
    planned_message,
    sweeping,
)
from batchcancel.session import Watch, confirm_run, resume_run, start_run
from batchcancel.summary import Summary, starting, summarise

__all__ = [
    "Given",
    "RunRequest",
    "Watch",
    "confirm_existing",
    "recorded_drain_options",
    "resume_existing",
    "run_or_resume",
    "would_resume",
]


@dataclass(frozen=True, slots=True)
class Given:
    """What a command on a run may be given anew: where things are, and how long to try."""

    db: str | None = None
    venues_config: str | None = None
    deadline: float | None = None
    max_attempts: int | None = None
    lease: float = 30.0


@dataclass(frozen=True, slots=True)
class RunRequest:
    """`run` or `kill` as asked on the command line, kill defaults applied (`of`)."""

    command: str  # "run" or "kill"
    given: Given
    source: str | None = None
    query: str | None = None
    source_db: str | None = None
    venue: str | None = None
    run_key: str | None = None
    dry_run: bool = False
    reason: str = ""
    bulk: bool = False
    all_open: bool = False
    confirm: bool = False
    confirm_timeout: float = contract.CONFIRM_TIMEOUT
    from_venues: tuple[str, ...] | None = None  # --from-venues, as venue names
    account: tuple[str, ...] = ()
    symbol: tuple[str, ...] = ()
    side: str | None = None

    @classmethod
    def of(cls, command: str, given: Given, **options: Any) -> RunRequest:
        """The request, checked: one source, and SPEC's kill defaults (a deadline, fewer
        attempts, bulk always on) where the kill was given none."""
        from batchcancel.venues import get_venue

        source, query = options.get("source"), options.get("query")
        books = books_venues(options.get("from_venues"))
        scoped = options.get("account") or options.get("symbol") or options.get("side")
        if scoped and books is None:
            raise ConfigError("--account, --symbol and --side narrow --from-venues: give it too")
        if source is not None and query is not None:
            raise ConfigError("give either SOURCE (a CSV path or -) or --query, not both")
        if source is None and query is None and books is None:
            raise ConfigError(
                "give SOURCE (a CSV path or -), --query with --source-db, or --from-venues"
            )
        if query is not None and not options.get("source_db"):
            raise ConfigError("--query needs --source-db URL")
        venue = options.get("venue")
        if venue is not None:
            venue = venue.strip().lower()
            get_venue(venue)
        if command == "kill":
            given = dataclasses.replace(
                given,
                deadline=KILL_DEADLINE if given.deadline is None else given.deadline,
                max_attempts=given.max_attempts or KILL_MAX_ATTEMPTS,
            )
        bulk = bool(options.get("bulk") or options.get("all_open") or command == "kill")
        scope = {
            "from_venues": books,
            "account": _cleaned(options.get("account")),
            "symbol": _cleaned(options.get("symbol")),
            "side": (options.get("side") or "").lower() or None,
        }
        return cls(command, given, **{**options, **scope, "venue": venue, "bulk": bulk})

    def books(self) -> BooksScope | None:
        """The --from-venues scope, if it was given."""
        return _scope(
            {
                "from_venues": self.from_venues,
                "account": self.account,
                "symbol": self.symbol,
                "side": self.side,
            }
        )

    def drain_options(self) -> DrainOptions:
        """How the first session drains the run."""
        return DrainOptions(
            max_attempts=self.given.max_attempts or DEFAULT_MAX_ATTEMPTS,
            deadline=self.given.deadline,
            lease=self.given.lease,
            claim_all=self.command == "kill",
            bulk=self.bulk,
            all_open=self.all_open,
            books=self.books(),
            kill=self.command == "kill",
        )

    def confirm_options(self) -> DrainOptions | None:
        """How it confirms afterwards, if --confirm was given."""
        if not self.confirm:
            return None
        attempts = self.given.max_attempts or DEFAULT_MAX_ATTEMPTS
        return DrainOptions(confirm=True, deadline=self.confirm_timeout, max_attempts=attempts)

    def to_record(self) -> dict[str, Any]:
        """`runs.options`: what a resume restores (recorded_drain_options) and `status` shows."""
        venues_config = self.given.venues_config
        return {
            "venue": self.venue,
            "max_attempts": self.given.max_attempts or DEFAULT_MAX_ATTEMPTS,
            "deadline": self.given.deadline,
            "bulk": self.bulk,
            "all_open": self.all_open,
            "confirm": self.confirm,
            "confirm_timeout": self.confirm_timeout,
            "venues_config": os.path.abspath(venues_config) if venues_config else None,
            "from_venues": list(self.from_venues) if self.from_venues is not None else None,
            "account": list(self.account),
            "symbol": list(self.symbol),
            "side": self.side,
        }


def books_venues(text: str | None) -> tuple[str, ...] | None:
    """--from-venues VENUES: a comma list of venue names, or `all`; ConfigError naming an
    unknown one."""
    from batchcancel.venues import VENUES, get_venue

    if text is None:
        return None
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError("--from-venues needs venue names (a comma list) or all")
    if "all" in names:
        return tuple(sorted(VENUES))
    for name in names:
        get_venue(name)  # ConfigError naming the known venues
    return tuple(dict.fromkeys(names))


def _cleaned(values: Iterable[str] | None) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in values or () if v.strip()))
    if values and not items:
        raise ConfigError("--account and --symbol need a value")
    return items


def _scope(recorded: Mapping[str, Any]) -> BooksScope | None:
    """The books scope from a request's or a run's recorded options."""
    venues = recorded.get("from_venues")
    if venues is None:
        return None
    return BooksScope(
        venues=frozenset(venues),
        accounts=tuple(recorded.get("account") or ()),
        symbols=tuple(recorded.get("symbol") or ()),
        side=recorded.get("side") or "",
    )


def recorded_drain_options(
    run: RunInfo, *, deadline: float | None, max_attempts: int | None, lease: float
) -> tuple[DrainOptions, DrainOptions | None]:
    """How a resume drains `run` (and confirms, if the run asked for it): with the options
    the run was started with. Only the deadline, the attempts and the lease may be given anew.
    A cancel-all stays allowed if it was, but the lane sends none where one already went."""
    recorded = run.options
    attempts = max_attempts or int(recorded.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
    drain_options = DrainOptions(
        max_attempts=attempts,
        deadline=deadline,
        lease=lease,
        claim_all=run.command == "kill",
        bulk=bool(recorded.get("bulk")),
        all_open=bool(recorded.get("all_open")),
        books=_scope(recorded),  # a resume lists the books again: it trusts no old list
        kill=run.command == "kill",
    )
    confirm_options = (
        DrainOptions(
            confirm=True,
            deadline=float(recorded.get("confirm_timeout") or contract.CONFIRM_TIMEOUT),
            max_attempts=attempts,
        )
        if recorded.get("confirm")
        else None
    )
    return drain_options, confirm_options


def restored_settings(run: RunInfo, given: Given, loaded: Settings) -> Settings:
    """The settings a command on `run` uses: the venues config it recorded unless one is
    given now, and the kill profile if it is a kill (whichever command resumes it)."""
    settings = config.settings_for_run(
        run.options.get("venues_config"),
        db_url=given.db,
        venues_config=given.venues_config,
        loaded=loaded,
    )
    return kill_profile(settings) if run.command == "kill" else settings


def run_or_resume(
    store: AuditStore, request: RunRequest, loaded: Settings, watch: Watch
) -> Summary:
    """`run` and `kill`: a new run, or the run its --run-key names (SPEC: a re-run with a
    key is a resume in every respect, with the run's recorded options; a dry run on it
    changes nothing; one whose loading was interrupted finishes loading)."""
    key = request.run_key
    existing = store.find_run_key(key) if key else None
    if existing is not None and request.dry_run:
        return would_resume(store, existing, watch.log)
    if existing is not None and existing.status != LOADING:
        watch.log(
            "resuming",
            f"run key {key} belongs to run {existing.id}: resuming it with its "
            "recorded options (the source is not read again)",
            run_id=existing.id,
        )
        watch.attach(store, existing.id)
        return resume(store, existing, request.given, loaded, watch)
    try:
        return _start(store, request, loaded, watch, loading=existing)
    except RunKeyTakenError as taken:
        # Another process (a second worker, an Airflow retry) recorded a run with this key
        # since we looked: it is the same run, so this one joins it.
        joined = store.find_run(key or "")
        watch.log("resuming", f"{taken}: joining it as a resume", run_id=joined.id)
        return resume(store, joined, request.given, loaded, watch)


def _start(
    store: AuditStore,
    request: RunRequest,
    loaded: Settings,
    watch: Watch,
    *,
    loading: RunInfo | None,
) -> Summary:
    """Read the source and start (or finish loading) the run."""
    from batchcancel.sources import no_input, read_csv, read_query

    settings = kill_profile(loaded) if request.command == "kill" else loaded
    log = watch.log
    with watch.display(settings) as views:
        if request.source is not None:
            table = read_csv(request.source, venue=request.venue)
        elif request.query is not None:
            table = read_query(request.query or "", request.source_db or "", venue=request.venue)
        else:
            table = no_input(f"the books of {', '.join(request.from_venues or ())}")
        if table.warning:  # a dialect that cannot enforce read-only itself
            log("source_warning", table.warning, level="warning")

        def announce(run_id: str, plan: Plan) -> None:
            watch.attach(store, run_id)
            if request.command == "kill" and watch.monitoring is not None:
                watch.monitoring.starting(starting(run_id, request.run_key, plan.to_send))
            log(
                "planned",
                planned_message(run_id, plan, dry_run=request.dry_run),
                run_id=run_id,
                orders=plan.to_send,
                invalid=plan.invalid,
                duplicates=plan.duplicates,
            )
            if request.all_open and (swept := sweeping(plan.to_send)):
                log(
                    "all_open",
                    f"--all-open: cancel-all at {', '.join(swept)} cancels every "
                    "open order of the account, listed or not; each is recorded",
                    run_id=run_id,
                    venues=swept,
                )
            if request.dry_run:
                for line in estimates(
                    settings, plan.to_send, bulk=request.bulk, all_open=request.all_open
                ):
                    log("estimate", line)
            else:
                warn_shared_venues(store, run_id, lambda: plan.to_send, log)

        return start_run(
            store,
            settings,
            table,
            command=request.command,
            run_key=request.run_key,
            only_venue=request.venue,
            options=request.to_record(),
            reason=request.reason,
            command_line=watch.command_line,
            dry_run=request.dry_run,
            drain_options=dataclasses.replace(request.drain_options(), notice=_notice(log)),
            views=views,
            on_planned=announce,
            loading=loading,
            confirm_options=request.confirm_options(),
        )


def resume_existing(
    store: AuditStore, run_ref: str, given: Given, loaded: Settings, watch: Watch
) -> Summary:
    """`resume RUN`: continue a run by id or key (not one whose loading was interrupted:
    only its source can finish that)."""
    run = store.find_run(run_ref)
    watch.attach(store, run.id)
    if run.status == LOADING:
        raise RunNotFoundError(
            f"run {run.id} was interrupted while its orders were loading; run it again "
            "with the same --run-key and source to finish loading"
        )
    return resume(store, run, given, loaded, watch)


def resume(
    store: AuditStore, run: RunInfo, given: Given, loaded: Settings, watch: Watch
) -> Summary:
    """Resume `run` with the options it was recorded with: `resume RUN`, a re-run with its
    --run-key and a join all come here, so they cannot differ. `loaded` are the settings as
    loaded for this command (no kill profile): the run's recorded command decides that."""
    settings = restored_settings(run, given, loaded)
    drain_options, confirm_options = recorded_drain_options(
        run, deadline=given.deadline, max_attempts=given.max_attempts, lease=given.lease
    )
    warn_shared_venues(store, run.id, lambda: store.venues_with_work(run.id), watch.log)
    drain_options = dataclasses.replace(drain_options, notice=_notice(watch.log))
    with watch.display(settings) as views:
        return resume_run(
            store,
            settings,
            run,
            command_line=watch.command_line,
            drain_options=drain_options,
            views=views,
            confirm_options=confirm_options,
        )


def confirm_existing(
    store: AuditStore, run_ref: str, given: Given, timeout: float, loaded: Settings, watch: Watch
) -> Summary:
    """`confirm RUN`: poll the status of its cancel_pending orders for `timeout` seconds."""
    run = store.find_run(run_ref)
    watch.attach(store, run.id)
    settings = config.settings_for_run(
        run.options.get("venues_config"),
        db_url=given.db,
        venues_config=given.venues_config,
        loaded=loaded,
    )
    with watch.display(settings) as views:
        return confirm_run(
            store,
            settings,
            run,
            command_line=watch.command_line,
            confirm_options=DrainOptions(confirm=True, deadline=timeout),
            views=views,
        )


def would_resume(store: AuditStore, run: RunInfo, log: Log) -> Summary:
    """A dry run on an existing run: say what a resume would send, per venue, read without
    changing anything; the run's summary as a dry run reports it (status planned)."""
    to_send = store.venues_with_work(run.id)
    per_venue = ", ".join(f"{v} {n}" for v, n in sorted(to_send.items()))
    loading = (
        "; its loading was interrupted, so a re-run also records the source's remaining rows"
        if run.status == LOADING
        else ""
    )
    log(
        "planned",
        f"run key {run.run_key} belongs to run {run.id}: a resume would send "
        f"{sum(to_send.values())} orders ({per_venue or 'none'}){loading}; dry run: nothing "
        "sent, nothing changed",
        run_id=run.id,
        orders=to_send,
    )
    return dataclasses.replace(summarise(store, run), status=RunStatus.PLANNED)


def _notice(log: Log) -> Callable[[str], None]:
    """The engine's lines for the operator (a lane paused for another run's kill)."""
    return lambda text: log("kill_precedence", text, level="warning")


def warn_shared_venues(
    store: AuditStore, run_id: str, needed: Callable[[], Iterable[str]], log: Log
) -> None:
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
        log(
            "shared_venue",
            f"{venue}: run {named} is sending there too; the runs share its rate limit, so "
            "both go slower and 429s may pause both",
            level="warning",
            run_id=run_id,
            venue=venue,
            other_runs=[other for other, _ in others],
        )
