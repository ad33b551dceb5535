"""Old import path of the pacing module: `batchcancel.pacing` holds Pacer and RequestWindow."""

from __future__ import annotations

from batchcancel.pacing import Pacer, RequestWindow, Slot, safety_margin

__all__ = ["Pacer", "RequestWindow", "Slot", "safety_margin"]
