"""Deterministic simulation: the real engine, policy, pacer and SQLite audit store, on virtual time.

A seeded schedule picks venues, orders, options and faults; a fake transport answers in each
venue's wire format (the venue simulators' own handlers, called in-process) and injects the
faults; a crash may cut the session at any step, and a resume then finishes the run. After
every schedule the invariants of the write-ahead audit are checked. A failing seed prints
itself; `replay(seed)` runs it again exactly.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")

QUANTUM: Final = 1e-6  # virtual seconds: the smallest step the virtual clock takes


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock is virtual: when nothing is ready it jumps to the next timer
    instead of waiting, so `asyncio.sleep(60)` takes no real time and every run with the same
    inputs interleaves the same way (nothing here may use threads or sockets)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._virtual_now = start
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (only the selector does, between callbacks)."""
        self._virtual_now += seconds


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("simulation stalled: nothing ready and no timer to wait for")
        self._loop.advance(max(timeout, QUANTUM))
        return []


def run_virtual(coro: Coroutine[Any, Any, T], start: float = 1000.0) -> tuple[T, float]:
    """Run `coro` on a fresh virtual-time loop; its result and the virtual seconds it took."""
    loop = VirtualTimeLoop(start)
    try:
        result = loop.run_until_complete(coro)
        return result, loop.time() - start
    finally:
        loop.close()
