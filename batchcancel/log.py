"""The stderr log: one line per event, plain text or a JSON object, through the redactor.

A StderrLog is made once per command line by the click group (from --log-format) and handed
down in click's ctx.obj; nothing here is a module global. The progress display writes its
JSON lines with the same envelope (`record`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import click

from batchcancel import redact

__all__ = ["Log", "StderrLog", "record"]


class Log(Protocol):
    """What the run lifecycle says through: an event name, a message and fields."""

    def __call__(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        """Write one line."""


def record(event: str, level: str = "info") -> dict[str, Any]:
    """The envelope every JSON line starts with: ts, level, event."""
    return {"ts": datetime.now(UTC).isoformat(), "level": level, "event": event}


@dataclass(frozen=True, slots=True)
class StderrLog:
    """Lines on stderr: `batchcancel: message` (errors `batchcancel: error: message`), or,
    with `json_lines`, one JSON object per line for log shippers. The message and every
    field value go through the current command's redactor first."""

    json_lines: bool = False

    def __call__(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        redactor = redact.current()
        message = redactor.text(message)
        if self.json_lines:
            line = {**record(event, level), "message": message, **redactor.value(fields)}
            click.echo(json.dumps(line), err=True)
        else:
            prefix = "batchcancel: error: " if level == "error" else "batchcancel: "
            click.echo(prefix + message, err=True)

    def warning(self, event: str, message: str, **fields: Any) -> None:
        """A line at level warning."""
        self(event, message, level="warning", **fields)
