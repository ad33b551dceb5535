"""transport.send reads a whole answer, however it arrives, and never more than its bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest

PIECE = b"x" * 50_000


async def trickle(request: web.Request) -> web.StreamResponse:
    """An answer written in pieces with pauses between them (chunked, several segments)."""
    pieces = int(request.query.get("pieces", "4"))
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(pieces):
        await response.write(PIECE)
        await asyncio.sleep(0.02)
    await response.write_eof()
    return response


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/trickle", trickle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_answer_in_pieces_is_read_whole(base_url: str) -> None:
    """Four pieces of 50 kB, 20 ms apart: all 200 kB come back (read(n) alone gave the
    first piece only, and a long cancel-all answer was taken for junk)."""
    request = CancelRequest("GET", "/trickle?pieces=4", ())
    async with open_session(max_connections=1) as session:
        reply = await send(session, base_url, request, timeout=5.0, max_body=1_000_000)
    assert reply.body == PIECE * 4


async def test_the_bound_holds(base_url: str) -> None:
    """Never more than `max_body` bytes, whatever the venue sends."""
    request = CancelRequest("GET", "/trickle?pieces=4", ())
    async with open_session(max_connections=1) as session:
        reply = await send(session, base_url, request, timeout=5.0, max_body=120_000)
    assert reply.body == (PIECE * 4)[:120_000]
