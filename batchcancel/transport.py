"""The only aiohttp caller: send one CancelRequest, get a Reply or a TransientVenueError.

`open_transport` gives the engine its default Transport (drain_types): one client session per
lane behind the one-method boundary, so a test transport can stand in for aiohttp.

aiohttp 3.x silently re-sends an idempotent request (every DELETE cancel) once when a
kept-alive connection drops. That re-send would reach the venue with no attempt row, so a
client middleware turns the drop into an error that aiohttp does not retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from batchcancel.drain_types import MAX_BODY_BYTES
from batchcancel.errors import TransientVenueError
from batchcancel.venues.base import CancelRequest, Reply

__all__ = [
    "MAX_BODY_BYTES",
    "AiohttpTransport",
    "ConnectionDropped",
    "open_session",
    "open_transport",
    "send",
]


class ConnectionDropped(aiohttp.ClientError):
    """The connection dropped mid-request. Not a ClientOSError, so aiohttp will not re-send."""


async def _no_silent_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    try:
        return await handler(request)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ConnectionDropped(f"connection dropped: {type(exc).__name__}") from exc


def open_session(*, max_connections: int) -> aiohttp.ClientSession:
    """A client session for one venue; every request goes out once, or not at all."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    return aiohttp.ClientSession(
        connector=connector,
        middlewares=(_no_silent_resend,),
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class AiohttpTransport:
    """The Transport of a real run: `send` over one client session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(
        self, base_url: str, request: CancelRequest, *, timeout: float, max_body: int
    ) -> Reply:
        """See `send`."""
        return await send(self._session, base_url, request, timeout=timeout, max_body=max_body)


@contextlib.asynccontextmanager
async def open_transport(max_connections: int) -> AsyncIterator[AiohttpTransport]:
    """A lane's transport: its own client session, closed when the lane ends."""
    async with open_session(max_connections=max_connections) as session:
        yield AiohttpTransport(session)


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    request: CancelRequest,
    *,
    timeout: float,
    max_body: int = MAX_BODY_BYTES,
) -> Reply:
    """Send `request` to `base_url` + its path and read the answer (at most `max_body` bytes).
    Any exception on the way is this request's transient answer; cancellation passes through."""
    try:
        url = URL(base_url.rstrip("/") + request.path, encoded=True)
        async with session.request(
            request.method,
            url,
            headers=dict(request.headers),
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            body = await _read(response.content, max_body)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return Reply(status=response.status, headers=headers, body=body)
    except TimeoutError as exc:
        raise TransientVenueError(f"no answer within {timeout:g} s") from exc
    except aiohttp.ClientError as exc:
        raise TransientVenueError(_describe(exc)) from exc
    except Exception as exc:
        # Not aiohttp's own error (a CR/LF in a header, a value it cannot serialise): its
        # text may quote a header, so only its type is kept, and it is not chained.
        raise TransientVenueError(
            f"{type(exc).__name__} in the HTTP library (request not sent, or answer unreadable)"
        ) from None


async def _read(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to EOF or `limit` bytes. `read(n)` alone returns only what is buffered so
    far: a body that arrives in several segments would be cut short."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _describe(exc: aiohttp.ClientError) -> str:
    """A one-line description that never includes request headers."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.http_exceptions.HttpProcessingError):
        # aiohttp reports an answer it cannot parse as its own "400": the venue sent none.
        return f"the answer is not valid HTTP: {cause.message.splitlines()[0]}"[:200]
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


# Timeouts while reading inside aiohttp surface as asyncio.TimeoutError (= TimeoutError).
assert asyncio.TimeoutError is TimeoutError
