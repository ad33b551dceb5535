"""Benchmarks of batchcancel against loopback simulators: `python -m benchmarks [--quick]`.

Each module measures one group of figures and returns `Row`s (see `benchmarks.common`);
`__main__` runs them all, prints the table and writes docs/benchmarks.md. Every simulator runs
in its own process (`benchmarks.simserver`), so client and server never share one GIL.
"""
