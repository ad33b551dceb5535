"""transport.send reads a whole answer, however it arrives, and never more than its bound;
any exception on one request is that request's transient answer, and never quotes a header."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from batchcancel.errors import TransientVenueError
from batchcancel.transport import open_session, send
from batchcancel.venues.base import CancelRequest

PIECE = b"x" * 50_000
TOKEN = "tok-SECRET-5e1d"
HEARD: list[str] = []  # paths the server received, across one test


async def heard(request: web.Request) -> web.Response:
    HEARD.append(request.path)
    return web.Response(text="ok")


async def stall(request: web.Request) -> web.Response:
    HEARD.append(request.path)
    await asyncio.sleep(30)
    return web.Response(text="late")


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
    app.router.add_get("/stall", stall)
    app.router.add_route("*", "/{tail:.*}", heard)
    HEARD.clear()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
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


@pytest.mark.parametrize(
    "request_",
    [
        CancelRequest("DELETE", "/v1/orders/1", (("Authorization", f"Bearer {TOKEN}\r\nX-A: 1"),)),
        CancelRequest("DELETE", "/v1/orders/1", (("Authorization", f"Bearer {TOKEN}\x00"),)),
        CancelRequest("DELETE", "/v1/orders/1", ((f"X-{TOKEN}\r\nX-A", "1"),)),
        # aiohttp's TypeError for a non-str header quotes the value it refused
        CancelRequest("DELETE", "/v1/orders/1", (("Authorization", f"Bearer {TOKEN}".encode()),)),  # type: ignore[arg-type]
        CancelRequest("DEL ETE", "/v1/orders/1", (("Authorization", f"Bearer {TOKEN}"),)),
    ],
    ids=["crlf-value", "nul-value", "crlf-name", "bytes-value", "bad-method"],
)
async def test_any_exception_is_transient(base_url: str, request_: CancelRequest) -> None:
    """Whatever aiohttp raises for one request (here a ValueError or TypeError, not a
    ClientError) is a TransientVenueError in one line that quotes no header: nothing sent."""
    async with open_session(max_connections=1) as session:
        with pytest.raises(TransientVenueError) as exc:
            await send(session, base_url, request_, timeout=5.0)
    message = str(exc.value)
    assert message and "\n" not in message and "\r" not in message
    assert TOKEN not in message
    assert HEARD == []


async def test_a_bad_url_is_transient(base_url: str) -> None:
    """A URL yarl refuses (a port out of range) is that request's transient answer too."""
    request = CancelRequest("DELETE", "/v1/orders/1", (("Authorization", f"Bearer {TOKEN}"),))
    async with open_session(max_connections=1) as session:
        with pytest.raises(TransientVenueError) as exc:
            await send(session, "http://127.0.0.1:99999", request, timeout=5.0)
    assert TOKEN not in str(exc.value)


async def test_cancellation_is_not_swallowed(base_url: str) -> None:
    """Cancelling a send in flight (SIGINT, a lost lane) cancels it: no transient answer."""
    request = CancelRequest("GET", "/stall", ())
    async with open_session(max_connections=1) as session:
        task = asyncio.create_task(send(session, base_url, request, timeout=20.0))
        while not HEARD:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
