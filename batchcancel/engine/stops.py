"""The one owner of a session's early stops: SIGINT / SIGTERM and the deadline.

`async with Stops(stop, ...)` installs the signal handlers (restoring what the caller had on
exit) and arms the deadline on the injected sleep; each calls `stop(reason)` once it fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from types import FrameType, TracebackType

from batchcancel.drain_types import Sleep

__all__ = ["Stops"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], object] | int | None


class Stops:
    """SIGINT/SIGTERM (when `handle_signals`) and a deadline (seconds, or None) call `stop`."""

    def __init__(
        self,
        stop: Callable[[str], None],
        *,
        deadline: float | None,
        handle_signals: bool,
        sleep: Sleep,
    ) -> None:
        self._stop = stop
        self._deadline = deadline
        self._handle_signals = handle_signals
        self._sleep = sleep
        self._installed: list[signal.Signals] = []
        self._previous: dict[signal.Signals, _Handler] = {}
        self._timer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stops:
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            for signum in SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._previous[signum] = signal.getsignal(signum)
                    loop.add_signal_handler(
                        signum, self._stop, f"stopped by {signal.Signals(signum).name}"
                    )
                    self._installed.append(signum)
        if self._deadline is not None:
            self._timer = asyncio.create_task(self._expire(self._deadline), name="deadline")
        return self

    async def _expire(self, seconds: float) -> None:
        await self._sleep(seconds)
        self._stop(f"deadline of {seconds:g} s passed")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)
            handler = self._previous.get(signum)
            if callable(handler) or isinstance(handler, int):
                signal.signal(signum, handler)  # what the caller had before the run
        if self._timer is not None:
            self._timer.cancel()  # not awaited: a cancellation of the session must not be lost
