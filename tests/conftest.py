"""Shared fixtures: simulators on loopback, a migrated SQLite audit database, credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from batchcancel.simulators.base import Simulator
from batchcancel.simulators.server import SimulatorServer

# Credentials used by every test. Distinctive values so that leak searches cannot miss them.
CREDENTIALS: Mapping[str, str] = {
    "BATCHCANCEL_SFOX_API_KEY": "sfox-SECRET-key-7f3a9c",
    "BATCHCANCEL_ETNA_APP_KEY": "etna-SECRET-appkey-51d2",
    "BATCHCANCEL_ETNA_TOKEN": "etna-SECRET-token-88e1",
    "BATCHCANCEL_CRUX_TOKEN": "crux-SECRET-token-0b6e",
    "BATCHCANCEL_TANX_JWT": "tanx-SECRET-jwt-c4a7",
    "BATCHCANCEL_ZEBPAY_JWT": "zebpay-SECRET-jwt-93fd",
    "BATCHCANCEL_ZEBPAY_API_KEY": "zebpay-SECRET-apikey-2e58",
    "BATCHCANCEL_ZEBPAY_API_SECRET": "zebpay-SECRET-hmac-6a1c",
}
SECRET_VALUES: tuple[str, ...] = tuple(CREDENTIALS.values())

ServeSimulators = Callable[[Mapping[str, Simulator]], AbstractAsyncContextManager[SimulatorServer]]


@pytest.fixture
def serve_simulators() -> ServeSimulators:
    """Start simulators on 127.0.0.1 at a free port: `async with serve({...}) as server`."""

    @asynccontextmanager
    async def serve(simulators: Mapping[str, Simulator]) -> AsyncIterator[SimulatorServer]:
        async with SimulatorServer(simulators) as server:
            yield server

    return serve
