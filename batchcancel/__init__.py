"""batchcancel: cancel trading orders in bulk across venues, with a write-ahead audit trail."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
