"""The pacer on virtual time: a stop is never held up by a full rate window or a pause, and a
slot cannot be given back twice or forgotten."""

from __future__ import annotations

import asyncio

from batchcancel.pacing import Pacer, RequestWindow
from tests.test_engine_sim import run_virtual


def virtual_pacer(rate_limit: int, period: float, max_in_flight: int = 4) -> Pacer:
    loop = asyncio.get_running_loop()
    return Pacer(rate_limit=rate_limit, period=period, max_in_flight=max_in_flight, clock=loop.time)


async def settle() -> None:
    """Let every ready task run until it waits (bounded)."""
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_stop_does_not_wait_for_a_full_window() -> None:
    """ZebPay's window is 60 s: a lane halted while waiting for a slot returns at once (no
    virtual time passes), and the slot it was waiting for is not reserved."""

    async def scenario() -> tuple[bool, bool, float]:
        loop = asyncio.get_running_loop()
        pacer = virtual_pacer(rate_limit=1, period=60.0)
        async with pacer.slot() as slot:
            assert slot is not None
            slot.answered()
        waiting = asyncio.create_task(pacer.grant())
        await settle()
        blocked = not waiting.done()  # the window is full for the next minute
        halted_at = loop.time()
        pacer.halt()
        got = await waiting
        return blocked, got is None, loop.time() - halted_at

    (blocked, refused, waited), _ = run_virtual(scenario())
    assert blocked
    assert refused
    assert waited == 0.0


def test_a_stop_during_a_pause_returns_at_once() -> None:
    """A 429 pause of 120 s: a halt ends the wait for it without waiting it out."""

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        pacer = virtual_pacer(rate_limit=0, period=1.0)
        pacer.pause(120.0)
        waiting = asyncio.create_task(pacer.grant())
        await settle()
        halted_at = loop.time()
        pacer.halt()
        got = await waiting
        return got is None, loop.time() - halted_at

    (refused, waited), _ = run_virtual(scenario())
    assert refused
    assert waited == 0.0


def test_a_pause_holds_the_next_slot_back_for_its_length() -> None:
    """The next slot after a 5 s pause is granted 5 virtual seconds later, not before."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = virtual_pacer(rate_limit=0, period=1.0)
        started = loop.time()
        pacer.pause(5.0)
        async with pacer.slot() as slot:
            assert slot is not None
        return loop.time() - started

    waited, _ = run_virtual(scenario())
    assert 5.0 <= waited < 5.01


def test_an_answered_slot_holds_the_window_one_period_after_its_answer() -> None:
    """Limit 2 per 1 s (plus the margin): the third request waits until one period after
    the first answer, and no three grants ever fall in one window."""

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        pacer = virtual_pacer(rate_limit=2, period=1.0)
        grants = []
        for _ in range(6):
            async with pacer.slot() as slot:
                assert slot is not None
                grants.append(loop.time())
                await asyncio.sleep(0.3)  # the answer takes 0.3 s
                slot.answered()
        return grants

    grants, _ = run_virtual(scenario())
    for first, third in zip(grants, grants[2:], strict=False):
        assert third - first >= 1.0 + 0.3


def test_a_slot_closed_unanswered_is_returned_to_the_window() -> None:
    """A slot whose request never left gives its place back: the next grant is immediate;
    closing it twice changes nothing."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = virtual_pacer(rate_limit=1, period=60.0, max_in_flight=1)
        granted = await pacer.grant()
        assert granted is not None
        granted.close()
        granted.close()
        started = loop.time()
        async with pacer.slot() as slot:
            assert slot is not None
        return loop.time() - started

    waited, _ = run_virtual(scenario())
    assert waited == 0.0


def test_an_interrupted_wait_reserves_nothing() -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        window = RequestWindow(limit=1, period=0.2, clock=loop.time)
        assert window.try_grant()
        assert not window.try_grant()  # granted and unanswered: counts in every window
        waiting = asyncio.create_task(window.grant())
        await settle()
        waiting.cancel()
        window.answered()
        await asyncio.sleep(0.25)  # virtual: the answer leaves the window
        return window.try_grant(), window.try_grant()

    (first, second), _ = run_virtual(scenario())
    assert first  # the cancelled wait took no slot
    assert not second


def test_the_old_import_path_still_works() -> None:
    from batchcancel import lanes

    assert lanes.Pacer is Pacer
