"""Serve simulators on a loopback port, for `simulate`, `demo` and the tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

from aiohttp import web

from batchcancel.simulators import build_app
from batchcancel.simulators.base import Simulator

__all__ = ["SimulatorServer", "serve_in_thread"]


class SimulatorServer:
    """An async context manager running simulators under /<name>; `url(name)` is a base URL."""

    def __init__(
        self, simulators: Mapping[str, Simulator], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.simulators = dict(simulators)
        self.host = host
        self.port = port
        self._runner = web.AppRunner(
            build_app(self.simulators), access_log=None, handle_signals=False
        )

    async def start(self) -> None:
        """Bind and start serving; port 0 picks a free port."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound socket tells which port 0 became
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and close connections."""
        await self._runner.cleanup()

    def url(self, name: str) -> str:
        """The base URL of simulator `name`."""
        return f"http://{self.host}:{self.port}/{name}"

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@contextmanager
def serve_in_thread(
    simulators: Mapping[str, Simulator], *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[SimulatorServer]:
    """Serve simulators from their own event loop in a background thread (demo, simulate)."""
    loop = asyncio.new_event_loop()
    server = SimulatorServer(simulators, host=host, port=port)
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="simulators", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
