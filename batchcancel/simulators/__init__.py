"""The simulator registry, and one application that mounts them all under /<venue>."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from batchcancel.simulators.base import Simulator
from batchcancel.simulators.sfox import SfoxSimulator

__all__ = ["SIMULATORS", "build_app"]

SIMULATORS: Final[Mapping[str, type[Simulator]]] = {
    "sfox": SfoxSimulator,
}


def build_app(simulators: Mapping[str, Simulator]) -> web.Application:
    """One application serving each simulator under its /<name> prefix."""
    root = web.Application()
    for name, simulator in simulators.items():
        root.add_subapp(f"/{name}", simulator.app())
    return root
