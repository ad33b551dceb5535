"""Simulators in a separate process: `python -m benchmarks.simserver SPEC.json`.

The spec names the venues to simulate (limit, period, penalty, the ids to seed open; optionally
`async_ids` seeded with a cancel that completes later and `fill_ids` of those that fill). Besides
the simulators under /<venue> the server has a trivial handler under /trivial (the ceiling
figure) and two bench routes: GET /_bench/stats (counters per venue) and POST /_bench/reset
(clear the counters, seed the book again). It prints its port on stdout, then serves until
stdin closes or it is terminated.

`SimProcess` is the parent's side: start it, ask for stats, reset it, stop it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

TRIVIAL_BODY = b'{"status": "canceled"}'


def _build(spec: Mapping[str, Any]) -> web.Application:
    from batchcancel.simulators import SIMULATORS, build_app
    from batchcancel.simulators.base import OrderState, Simulator

    simulators: dict[str, Simulator] = {}
    for name, venue in spec.get("venues", {}).items():
        simulators[name] = SIMULATORS[name](
            credentials=spec["credentials"],
            rate_limit=venue.get("rate_limit"),
            period=venue.get("period", 1.0),
            penalty=venue.get("penalty", 1.0),
        )

    def seed() -> None:
        for name, simulator in simulators.items():
            simulator.book.clear()
            venue = spec["venues"][name]
            simulator.seed(dict.fromkeys(venue.get("ids", []), OrderState.OPEN))
            # Orders whose cancel completes later, and those of them that fill instead.
            simulator.seed(dict.fromkeys(venue.get("async_ids", []), OrderState.OPEN_ASYNC))
            simulator.will_fill.update(venue.get("fill_ids", []))

    seed()
    trivial: list[float] = []

    async def trivial_cancel(request: web.Request) -> web.Response:
        trivial.append(time.time())
        return web.Response(body=TRIVIAL_BODY, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        venues: dict[str, dict[str, Any]] = {}
        for name, s in simulators.items():
            times = [a.at for a in s.arrivals]
            first = min(s.arrivals, key=lambda a: a.at, default=None)
            venues[name] = {
                "requests": s.total_requests,
                "distinct": len(s.requests),
                "max_per_key": max(s.requests.values(), default=0),
                "rate_limited": s.rate_limited,
                "peak_in_flight": s.peak_in_flight,
                "first": min(times, default=None),
                "last": max(times, default=None),
                "first_key": first.key if first is not None else None,
            }
            if request.query.get("times"):
                venues[name]["times"] = sorted(times)
        venues["trivial"] = {
            "requests": len(trivial),
            "first": min(trivial, default=None),
            "last": max(trivial, default=None),
        }
        return web.json_response(venues)

    async def reset(request: web.Request) -> web.Response:
        for s in simulators.values():
            s.requests.clear()
            s.arrivals.clear()
            s.total_requests = 0
            s.rate_limited = 0
            s.peak_in_flight = 0
        trivial.clear()
        seed()
        return web.json_response({"ok": True})

    app = build_app(simulators)
    app.router.add_route("*", "/trivial/{tail:.*}", trivial_cancel)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset)
    return app


async def _serve(spec: Mapping[str, Any]) -> None:
    runner = web.AppRunner(_build(spec), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not os.read(0, 1) else None)
    await done.wait()
    await runner.cleanup()


class SimProcess:
    """The parent's handle on a simulator server process (a context manager)."""

    def __init__(self, spec: Mapping[str, Any], work_dir: Path) -> None:
        spec_path = work_dir / f"sim-{time.monotonic_ns()}.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.simserver", str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError("the simulator server did not start")
        self.port = int(line)

    def url(self, name: str) -> str:
        """The base URL of venue `name` (or "trivial")."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def _call(self, path: str, method: str) -> Any:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.url("_bench") + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self, *, times: bool = False) -> dict[str, dict[str, Any]]:
        """Counters per venue (and "trivial"): requests, distinct, max_per_key, first, last;
        with `times`, every arrival time per venue too."""
        return self._call("/stats?times=1" if times else "/stats", "GET")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Clear the counters and seed every book again."""
        self._call("/reset", "POST")

    def stop(self) -> None:
        """Close stdin (the server's cue to stop) and wait for it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    asyncio.run(_serve(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
