"""Both audit stores implement the engine's LaneStore port, name for name and type for type."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchcancel.audit.ports import LaneStore
from batchcancel.audit.store import AuditStore
from benchmarks.memstore import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
PORT_METHODS = sorted(
    name
    for name, member in vars(LaneStore).items()
    if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
)
STORES = [pytest.param(AuditStore, id="AuditStore"), pytest.param(MemoryStore, id="MemoryStore")]


def shape(function: Callable[..., Any]) -> list[tuple[str, object, object, object]]:
    """A signature as comparable data: each parameter's name, kind, default and annotation,
    then the return annotation (annotations are the strings `from __future__` leaves)."""
    signature = inspect.signature(function)
    params = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
    return [*params, ("return", None, None, signature.return_annotation)]


def test_the_port_names_what_the_engine_calls() -> None:
    """The port is not empty: it names the hot path, the leases and the cancel-all records."""
    assert {"write_batch", "pending_page", "claim_lanes", "begin_request"} <= set(PORT_METHODS)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("name", PORT_METHODS)
def test_store_method_matches_the_port(store: type, name: str) -> None:
    """Every LaneStore member exists on the store with the port's exact signature."""
    wanted = vars(LaneStore)[name]
    found = inspect.getattr_static(store, name, None)
    assert found is not None, f"{store.__name__} has no {name}"
    if isinstance(wanted, property):
        assert isinstance(found, property), f"{store.__name__}.{name} is not a property"
        assert shape(found.fget) == shape(wanted.fget)
    else:
        assert shape(found) == shape(wanted)


def test_mypy_accepts_both_stores_as_lane_stores() -> None:
    """mypy --strict on benchmarks/memstore.py, whose `_fits_lane_store` returns a
    MemoryStore and an AuditStore as LaneStores (the project's mypy run covers only
    batchcancel/, so this test is what checks the benchmarks' store)."""
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "benchmarks/memstore.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
