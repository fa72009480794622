"""Load on the HTTP monitoring port: many concurrent clients, with idle connections held.

Starts the monitoring port (``itsd.monitor.http.MonitorServer``, or the module given with
``--module``, for example the ``http.server`` version of an older commit saved to a file)
on a fixed state, holds ``--idle`` silent connections open, then runs ``--clients``
clients at once, each doing ``--requests`` requests of ``/health`` and ``/metrics`` in
turn on fresh connections, and prints the latency percentiles, the share of requests
that took a second or more, and the failures.

    .venv/bin/python bench/monitor_bench.py --clients 100 --requests 20 --idle 50
    git show 035d32b:itsd/monitor/http.py > /tmp/old_http.py
    .venv/bin/python bench/monitor_bench.py --module /tmp/old_http.py
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import socket
import statistics
import sys
import threading
import time
import urllib.request
from types import MappingProxyType
from typing import Any

from itsd.control.backend import HealthSnapshot, MetricsSnapshot
from itsd.runtime import metrics as m
from itsd.runtime.metrics import Sample


class Backend:
    def health(self) -> HealthSnapshot:
        return HealthSnapshot("serving", "0", 1.0, "onnxruntime", "m.onnx")

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot({})

    def list_streams(self) -> list[Any]:
        return []


SAMPLES = tuple(
    Sample(m.DECODE_FRAMES, MappingProxyType({"camera": f"cam{i}"}), float(i)) for i in range(64)
)


def serve(module: str | None, conn: Any) -> None:
    """Run the server under test until told to stop."""
    if module:
        spec = importlib.util.spec_from_file_location("monitor_under_test", module)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        server = mod.MonitorServer(Backend(), "127.0.0.1", 0, lambda: SAMPLES)
    else:
        from itsd.monitor.http import MonitorServer

        server = MonitorServer(Backend(), "127.0.0.1", 0, lambda: SAMPLES)  # type: ignore[arg-type]
    conn.send(server.port)
    conn.recv()
    server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--idle", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--module", help="a monitor module file to test instead of itsd's own")
    args = ap.parse_args()
    # The server runs in its own process, as in the daemon (where it shares the
    # supervisor's), so the clients' threads do not compete with it for the GIL.
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(args.module, child), daemon=True)
    proc.start()
    port = int(parent.recv())
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.idle)]
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(args.clients)

    def client(k: int) -> None:
        start.wait()
        for i in range(args.requests):
            path = "/health" if (i + k) % 2 else "/metrics"
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{path}", timeout=args.timeout
                ) as r:
                    r.read()
                dt = time.monotonic() - t0
                with lock:
                    times.append(dt)
            except OSError as err:
                with lock:
                    failures.append(f"{path}: {err}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    for s in idle:
        s.close()
    parent.send("stop")
    proc.join(10)
    times.sort()
    n = len(times)
    q = statistics.quantiles(times, n=100) if n >= 2 else [0.0] * 99
    slow = sum(1 for x in times if x >= 1.0)
    print(
        f"{args.module or 'itsd.monitor.http'}: {args.clients} clients x {args.requests} "
        f"requests, {args.idle} idle connections held: {n} answered in {wall:.1f} s, "
        f"p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
        f"max {times[-1] * 1000:.0f} ms, >=1 s: {100 * slow / max(1, n):.1f} %, "
        f"failed: {len(failures)}"
    )
    for f in failures[:5]:
        print("  ", f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
