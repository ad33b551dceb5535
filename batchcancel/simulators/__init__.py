"""The simulator registry, and one application that mounts them all under /<venue>."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from batchcancel.simulators.base import Simulator
from batchcancel.simulators.crux import CruxSimulator
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.tanx import TanxSimulator
from batchcancel.simulators.zebpay import ZebpaySimulator

__all__ = ["SIMULATORS", "build_app"]

SIMULATORS: Final[Mapping[str, type[Simulator]]] = {
    "sfox": SfoxSimulator,
    "etna": EtnaSimulator,
    "crux": CruxSimulator,
    "tanx": TanxSimulator,
    "zebpay": ZebpaySimulator,
}


def build_app(simulators: Mapping[str, Simulator]) -> web.Application:
    """One application serving each simulator under its /<name> prefix."""
    root = web.Application()
    for name, simulator in simulators.items():
        root.add_subapp(f"/{name}", simulator.app())
    return root
