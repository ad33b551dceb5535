"""The pacer: a stop is never held up by a full rate window."""

from __future__ import annotations

import asyncio
import time

from batchcancel.lanes import Pacer, RequestWindow


async def test_a_stop_does_not_wait_for_a_full_window() -> None:
    """ZebPay's window is 60 s: a lane halted while waiting for a slot returns at once, and
    the slot it was waiting for is not reserved."""
    pacer = Pacer(rate_limit=1, period=60.0, max_in_flight=4)
    assert await pacer.acquire()
    pacer.answered()
    pacer.release()
    waiting = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the window is full for the next minute
    started = time.monotonic()
    pacer.halt()
    assert await asyncio.wait_for(waiting, timeout=5.0) is False
    assert time.monotonic() - started < 5.0


async def test_an_interrupted_wait_reserves_nothing() -> None:
    window = RequestWindow(limit=1, period=0.2)
    assert window.try_grant()
    assert not window.try_grant()  # granted and unanswered: counts in every window
    waiting = asyncio.create_task(window.grant())
    await asyncio.sleep(0.02)
    waiting.cancel()
    window.answered()
    await asyncio.sleep(0.25)  # the answer leaves the window
    assert window.try_grant()  # the cancelled wait took no slot
    assert not window.try_grant()
