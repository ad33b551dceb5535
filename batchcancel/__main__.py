"""`python -m batchcancel` runs the command line."""

from __future__ import annotations

from batchcancel.cli import main

if __name__ == "__main__":
    main()
