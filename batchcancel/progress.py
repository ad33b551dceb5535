"""Live progress on stderr: a rich table on a terminal, a plain line every few seconds otherwise.

Every text shown goes through a Redactor: a halt reason quotes the venue's answer, which may
echo a credential back (SPEC: none leaves the process).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, TextIO

from rich.console import Console
from rich.live import Live
from rich.markup import escape as rich_escape
from rich.table import Table

from batchcancel import redact
from batchcancel.drain_types import LaneView
from batchcancel.report import format_counts

__all__ = ["Progress"]

PLAIN_EVERY: Final = 5.0  # seconds between plain lines (Airflow logs)


def _rate(view: LaneView) -> float:
    elapsed = time.monotonic() - view.started
    return view.sent / elapsed if elapsed > 0 else 0.0


def _state(view: LaneView) -> str:
    if view.halted:
        return f"stopped: {view.halted}"
    left = view.paused_until - time.monotonic()
    if left > 0:
        return f"paused {left:.0f}s after 429"
    return "done" if view.done >= view.total else "sending"


class Progress:
    """Call with the lanes' views as often as you like; it draws at its own pace. Texts go
    through `redactor`, by default the current command's (taken here: progress may be drawn
    from another thread, where click's context is not at hand)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        json_lines: bool = False,
        redactor: redact.Redactor | None = None,
    ) -> None:
        self._redactor = redactor or redact.current()
        self._stream = stream or sys.stderr
        self._json = json_lines
        self._live_mode = (self._stream.isatty() and not json_lines) if live is None else live
        self._live: Live | None = None
        self._last_plain = 0.0
        self._views: Mapping[str, LaneView] = {}

    def __enter__(self) -> Progress:
        if self._live_mode:
            console = Console(file=self._stream)
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
            self._live.stop()
        elif self._views:
            self._write(self._views)  # the final state, whenever the last line was

    def __call__(self, views: Mapping[str, LaneView]) -> None:
        if self._live is not None:
            self._live.update(self._table(views))
            return
        if not views:
            return  # no lane has started yet
        self._views = views
        now = time.monotonic()
        if now - self._last_plain < PLAIN_EVERY:
            return
        self._last_plain = now
        self._write(views)

    def _write(self, views: Mapping[str, LaneView]) -> None:
        """One plain (or JSON) line per venue."""
        for view in views.values():
            if self._json:
                record = {
                    "ts": datetime.now(UTC).isoformat(),
                    "level": "info",
                    "event": "progress",
                    "venue": view.venue,
                    "done": view.done,
                    "total": view.total,
                    "rate": round(_rate(view), 1),
                    "outcomes": dict(view.outcomes),
                    "state": _state(view),
                }
                self._stream.write(json.dumps(self._redactor.value(record)) + "\n")
                continue
            line = (
                f"progress {view.venue}: {view.done}/{view.total} done, {_rate(view):.1f}/s, "
                f"{format_counts(dict(view.outcomes))}, {_state(view)}"
            )
            self._stream.write(self._redactor.text(line) + "\n")
        self._stream.flush()

    def _table(self, views: Mapping[str, LaneView]) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("venue", "done/total", "req/s", "retries", "outcomes", "state"):
            table.add_column(column)
        for view in views.values():
            table.add_row(
                view.venue,
                f"{view.done}/{view.total}",
                f"{_rate(view):.1f}",
                str(view.retries),
                format_counts(dict(view.outcomes)),
                # rich reads [..] as markup: escaped, a venue's words cannot restyle the table
                rich_escape(self._redactor.text(_state(view))),
            )
        return table
