"""Live progress on stderr: a rich table on a terminal, a plain line every few seconds otherwise.

Per venue: a progress bar, done/total, the request rate beside the venue's configured limit,
an ETA, retries and 429s, outcomes, and the state (sending, the countdown of a 429 pause,
done, or why it stopped). Plain and JSON lines carry the same fields as the table.

Every text shown goes through a Redactor: a halt reason quotes the venue's answer, which may
echo a credential back (SPEC: none leaves the process).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TextIO

from rich.console import Console
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from batchcancel import redact
from batchcancel.drain_types import LaneView
from batchcancel.log import record
from batchcancel.report import format_counts

__all__ = ["Progress", "VenueLine", "describe"]

PLAIN_EVERY: Final = 5.0  # seconds between plain lines (Airflow logs)
RATE_WINDOW: Final = 5.0  # seconds of history behind the rate and the ETA
BAR_WIDTH: Final = 20

Limit = tuple[int, float]  # rate_limit requests per period seconds; 0 requests: unthrottled


@dataclass(frozen=True, slots=True)
class VenueLine:
    """What the display says of one venue, whichever form it takes."""

    venue: str
    done: int
    total: int
    percent: float
    rate: float  # requests per second, recently
    limit: str  # "20/s", "250 per 10 s", "unthrottled" or "" (not known)
    limit_per_s: float | None
    eta_s: float | None  # None: not known (nothing done yet, or stopped)
    pause_left_s: float  # the 429 pause still to run; 0 when none
    retries: int
    rate_limited: int
    outcomes: dict[str, int]
    state: str

    def as_json(self) -> dict[str, Any]:
        """The JSON line's fields (besides ts, level, event)."""
        return {
            "venue": self.venue,
            "done": self.done,
            "total": self.total,
            "percent": round(self.percent, 1),
            "rate": round(self.rate, 1),
            "limit": self.limit or None,
            "limit_per_s": self.limit_per_s,
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "pause_left_s": round(self.pause_left_s, 1),
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "outcomes": self.outcomes,
            "state": self.state,
        }

    def plain(self) -> str:
        """The plain line: `progress <venue>: done/total done, ...`."""
        limit = f" (limit {self.limit})" if self.limit else ""
        return (
            f"progress {self.venue}: {self.done}/{self.total} done ({self.percent:.0f}%), "
            f"{self.rate:.1f}/s{limit}, ETA {_eta(self.eta_s)}, {self.retries} retries, "
            f"{self.rate_limited} 429s, {format_counts(self.outcomes)}, {self.state}"
        )


def describe(limit: Limit | None) -> tuple[str, float | None]:
    """A configured limit as the display shows it, and in requests per second."""
    if limit is None:
        return "", None
    count, period = limit
    if count <= 0 or period <= 0:
        return "unthrottled", None
    per_second = count / period
    text = f"{per_second:g}/s" if period == 1 else f"{count} per {period:g} s"
    return text, per_second


def _columns(stream: TextIO) -> int | None:
    """The width of the terminal `stream` is, if it is one and says."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        return None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Call with the lanes' views as often as you like; it draws at its own pace. Texts go
    through `redactor`, by default the current command's (taken here: progress may be drawn
    from another thread, where click's context is not at hand). `limits` are the venues'
    configured limits, (requests, period seconds) by venue."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        json_lines: bool = False,
        redactor: redact.Redactor | None = None,
        limits: Mapping[str, Limit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redactor = redactor or redact.current()
        self._stream = stream or sys.stderr
        self._json = json_lines
        self._live_mode = (self._stream.isatty() and not json_lines) if live is None else live
        self._live: Live | None = None
        self._last_plain = 0.0
        self._views: Mapping[str, LaneView] = {}
        self._limits = dict(limits or {})
        self._clock = clock
        # per venue: (time, requests sent, orders done), the last RATE_WINDOW seconds
        self._history: dict[str, deque[tuple[float, int, int]]] = {}
        self._final_rate: dict[str, float] = {}  # a finished venue keeps the rate it ended at

    def __enter__(self) -> Progress:
        if self._live_mode:
            # The terminal's own width: rich asks stdout first, and stdout is often a file
            # (`batchcancel run ... > summary.txt`), where it would assume 80 columns.
            console = Console(file=self._stream, width=_columns(self._stream))
            self._live = Live(console=console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            if self._views:
                self._live.update(self._table(self._views))  # the final state
            self._live.stop()
        elif self._views:
            self._write(self._views)  # the final state, whenever the last line was

    def __call__(self, views: Mapping[str, LaneView]) -> None:
        if not views:
            return  # no lane has started yet
        self._views = views
        now = self._clock()
        self._remember(views, now)
        if self._live is not None:
            self._live.update(self._table(views))
            return
        if now - self._last_plain < PLAIN_EVERY and self._last_plain:
            return
        self._last_plain = now
        self._write(views)

    def _remember(self, views: Mapping[str, LaneView], now: float) -> None:
        for view in views.values():
            history = self._history.setdefault(view.venue, deque())
            if history and now - history[-1][0] < 0.2:
                continue  # called four times a second: enough
            history.append((now, view.sent, view.done))
            while len(history) > 2 and now - history[1][0] >= RATE_WINDOW:
                history.popleft()

    def line(self, view: LaneView) -> VenueLine:
        """What the display says of `view` now."""
        now = self._clock()
        history = self._history.get(view.venue)
        rate = done_rate = 0.0
        if history and len(history) >= 2 and now - history[0][0] >= 1.0:
            then, sent_then, done_then = history[0]
            span = now - then
            rate = (view.sent - sent_then) / span
            done_rate = (view.done - done_then) / span
        elif now - view.started >= 1.0:  # too little history yet: the average so far
            elapsed = now - view.started
            rate = view.sent / elapsed
            done_rate = view.done / elapsed
        else:  # the first second: what was sent in it, so far
            rate = float(view.sent)
            done_rate = float(view.done)
        finished = view.total > 0 and view.done >= view.total
        if finished:  # the window would only decay from here on: keep the rate it ended at
            rate = self._final_rate.setdefault(view.venue, rate)
        limit, limit_per_s = describe(self._limits.get(view.venue))
        pause_left = max(0.0, view.paused_until - now)
        remaining = max(0, view.total - view.done)
        eta: float | None
        if not remaining:
            eta = 0.0
        elif view.halted:
            eta = None
        elif done_rate > 0:
            eta = remaining / done_rate + pause_left
        elif limit_per_s:  # nothing done lately (a pause): the limit is the best guess
            eta = remaining / limit_per_s + pause_left
        else:
            eta = None
        percent = 100.0 * view.done / view.total if view.total else 100.0
        return VenueLine(
            venue=view.venue,
            done=view.done,
            total=view.total,
            percent=percent,
            rate=rate,
            limit=limit,
            limit_per_s=limit_per_s,
            eta_s=eta,
            pause_left_s=pause_left,
            retries=view.retries,
            rate_limited=view.rate_limited,
            outcomes=dict(view.outcomes),
            state=self._state(view, pause_left),
        )

    def _state(self, view: LaneView, pause_left: float) -> str:
        if view.halted:
            return f"stopped: {view.halted}"
        if pause_left > 0:
            return f"429 pause, {pause_left:.1f} s left"
        return "done" if view.done >= view.total else "sending"

    def _write(self, views: Mapping[str, LaneView]) -> None:
        """One plain (or JSON) line per venue."""
        for view in views.values():
            line = self.line(view)
            if self._json:
                entry = {**record("progress"), **line.as_json()}
                self._stream.write(json.dumps(self._redactor.value(entry)) + "\n")
                continue
            self._stream.write(self._redactor.text(line.plain()) + "\n")
        self._stream.flush()

    def _table(self, views: Mapping[str, LaneView]) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in (
            "venue", "progress", "done/total", "req/s", "limit", "ETA", "retries", "429s",
            "outcomes", "state",
        ):
            table.add_column(column, no_wrap=column not in ("outcomes", "state"))
        for view in views.values():
            line = self.line(view)
            table.add_row(
                rich_escape(view.venue),
                ProgressBar(total=max(line.total, 1), completed=line.done, width=BAR_WIDTH),
                f"{line.done}/{line.total}",
                f"{line.rate:.1f}",
                line.limit or "—",
                _eta(line.eta_s),
                str(line.retries),
                str(line.rate_limited),
                format_counts(line.outcomes),
                # rich reads [..] as markup: escaped, a venue's words cannot restyle the table
                rich_escape(self._redactor.text(line.state)),
            )
        return table
