"""AuditWriter: groups the engine's audit writes into few transactions, off the event loop.

`begin` returns only once the attempt row is committed, so a request never leaves before its
record; `answer` queues an answer for the next commit. A begin whose lane the store finds
taken over by another worker is not written, and raises LaneLostError: it must not be sent.
While one transaction is committing in a worker thread (or wherever `offload` runs it) the
next batch accumulates, which is what groups commits under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from batchcancel.audit.ports import LaneStore
from batchcancel.audit.records import Answer, Begin
from batchcancel.errors import AuditError, LaneLostError

__all__ = ["AuditWriter"]


class _Offload(Protocol):
    """How a commit runs off the event loop (asyncio.to_thread; inline in a simulation)."""

    def __call__(
        self,
        func: Callable[[str, Sequence[Begin], Sequence[Answer]], set[str]],
        run_id: str,
        begins: Sequence[Begin],
        answers: Sequence[Answer],
        /,
    ) -> Awaitable[set[str]]: ...


class AuditWriter:
    """One per session. Start with `start()`, end with `close()` (which flushes)."""

    def __init__(
        self,
        store: LaneStore,
        run_id: str,
        on_lost: Callable[[str], None] = lambda venue: None,
        offload: _Offload = asyncio.to_thread,
    ) -> None:
        self._store = store
        self._offload = offload
        self._on_lost = on_lost
        self._run_id = run_id
        self._begins: list[tuple[tuple[Begin, ...], asyncio.Future[None]]] = []
        self._answers: list[Answer] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.failure: AuditError | None = None
        self.commits = 0

    def start(self) -> None:
        """Start the writing task."""
        self._task = asyncio.create_task(self._loop(), name="audit-writer")

    async def begin(self, *begins: Begin) -> None:
        """Record attempts about to be sent (one request's); returns once they are committed."""
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._begins.append((begins, future))
        self._wake.set()
        await future

    async def flush(self) -> None:
        """Return once everything queued so far is committed (before a lane is released:
        its last answers are written while the lease is still ours)."""
        await self.begin()

    def answer(self, answer: Answer) -> None:
        """Queue an answer for the next commit."""
        self._answers.append(answer)
        self._wake.set()

    async def close(self) -> None:
        """Write everything queued, stop, and raise the failure if writing failed."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self.failure is not None:
            raise self.failure

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            begins, self._begins = self._begins, []
            answers, self._answers = self._answers, []
            if not begins and not answers:
                if self._closing:
                    return
                continue
            lost: set[str] = set()
            if self.failure is None:
                try:
                    lost = await self._offload(
                        self._store.write_batch,
                        self._run_id,
                        [b for group, _ in begins for b in group],
                        answers,
                    )
                    self.commits += 1
                except AuditError as exc:
                    self.failure = exc
            for venue in sorted(lost):
                self._on_lost(venue)
            for group, future in begins:
                if future.done():
                    continue
                if self.failure is not None:
                    future.set_exception(self.failure)
                elif lanes_lost := {b.venue for b in group} & lost:
                    future.set_exception(LaneLostError(min(lanes_lost)))
                else:
                    future.set_result(None)
            self._wake.set()  # look again: more may have queued while committing
