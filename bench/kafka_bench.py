"""Benchmark: events/s through the publisher's Kafka path beside a raw producer loop.

Both run against the same Tansu broker (started here on a free port), in the same run,
in rotated order each round (publisher first in even rounds, raw first in odd ones):

- publisher: the publisher stage's own loop (``itsd.stages.publish.Pump``) on real
  shared memory with the daemon's Kafka sink: events (real detection events from
  ``itsd.events``, 20 cameras) are packed on a ``RecordRing`` before the clock starts;
  timed: ``Pump.step()`` until the ring is empty: batches of ``--batch`` records read
  and decoded (``RecordRing.peek_from`` and ``EventRecord.unpack_all``, one C call each
  per batch; the next batch while the broker answers for the last), produced with key
  and headers (acks=all, idempotence, lz4, linger 5 ms), settled (every event
  acknowledged, or failures spooled) and only then advanced past on the ring.
- raw: ``Producer.produce`` of the same messages (topic, payload, key, the two headers
  ``event_type`` and ``schema_version``), called the way the sink calls it (every
  argument by position), in a plain loop with the same producer settings (``poll(0)``
  every 1000 messages), then ``flush()``: the limit, with no per-batch wait, no
  delivery tracking and no ring.

``--warmup`` untimed rounds of each path (20,000 events) come first. The table gives the
median events/s of each over ``--rounds`` and the ratio publisher/raw (the goal is at
least 0.8) two ways: of the two medians, and the median of each round's own ratio (the
two runs of a round are back to back, so they share the machine's load of the moment:
on a shared machine this one moves less); and the CPU time each spent per event: this
process (all its threads: Python and librdkafka's) and the broker's. On a machine shared
with other work the wall-clock rates swing with the load; the CPU times move less and
say where the time goes. The load average (1, 5, 15 min) is printed before and after.

    .venv/bin/python bench/kafka_bench.py [--events N] [--rounds R] [--warmup W] [--batch B]
                                          [--json FILE]

This script must never be imported by itsd; it only measures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from confluent_kafka import Producer  # noqa: E402
from tansu_broker import TansuBroker  # noqa: E402

from itsd.config import KafkaConfig  # noqa: E402
from itsd.events import SCHEMA_VERSION, detection_event, detection_item  # noqa: E402
from itsd.records import EventRecord, EventType  # noqa: E402
from itsd.shm import RecordRing, new_run_id, segment_name  # noqa: E402
from itsd.sinks.kafka import KafkaSink, producer_config, topic_names  # noqa: E402
from itsd.sinks.spool import Spool  # noqa: E402
from itsd.stages.publish import KAFKA_BATCH_RECORDS, Output, Pump  # noqa: E402


class _Meter:
    def inc(self, n: int = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, all threads, or of process ``pid``."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_events(n: int, cameras: int = 20) -> list[EventRecord]:
    out = []
    for i in range(n):
        cam = i % cameras
        dets = [
            detection_item("car", 0.9, (10.0 + k, 20.0, 110.0, 90.0), 100 + k, True)
            for k in range(3)
        ]
        out.append(
            detection_event(
                f"cam-{cam:02d}", i // cameras, time.time_ns(), dets, 640, 360, 8.5, 41.2, 4
            )
        )
    return out


Result = tuple[float, float, float]  # events/s, CPU us per event: this process, broker


def _result(n: int, t0: float, c0: float, b0: float, broker: int) -> Result:
    dt = time.perf_counter() - t0
    return n / dt, (cpu_s() - c0) * 1e6 / n, (cpu_s(broker) - b0) * 1e6 / n


def run_publisher(
    cfg: KafkaConfig,
    ring: RecordRing,
    events: list[EventRecord],
    tmp: Path,
    batch: int,
    broker: int,
) -> Result:
    for ev in events:
        if not ring.try_put(ev.pack()):
            raise SystemExit("ring too small for --events")
    sink = KafkaSink(cfg, Spool(tmp / f"spool-{time.monotonic_ns()}", 1 << 30))
    sink.write(events[:1])  # connect and learn the topics before the clock starts
    m = _Meter()
    pump = Pump(
        ring,
        [Output(sink, m, m, m, m)],
        batch,
        beat=lambda: None,
        describe=lambda **kw: None,
        ack=lambda seq: None,
        give_up=lambda: False,
    )
    t0, c0, b0 = time.perf_counter(), cpu_s(), cpu_s(broker)
    while pump.step():
        pass
    res = _result(len(events), t0, c0, b0, broker)
    if not ring.is_empty():
        raise SystemExit("the publisher stopped before the ring was empty")
    if not sink.connected or not sink.spool.is_empty():
        raise SystemExit("the broker did not take every event")
    sink.close()
    return res


def run_raw(cfg: KafkaConfig, events: list[EventRecord], broker: int) -> Result:
    conf = producer_config(cfg)
    p = Producer(conf)
    topics = topic_names(cfg)
    headers: dict[EventType, list[tuple[str, str | bytes | None]]] = {
        kind: [("event_type", kind.wire_name.encode()), ("schema_version", SCHEMA_VERSION.encode())]
        for kind in EventType
    }
    items = [(topics[e.topic], e.payload, e.key.encode(), headers[e.kind]) for e in events]
    p.produce(items[0][0], items[0][1], items[0][2])
    p.flush()
    t0, c0, b0 = time.perf_counter(), cpu_s(), cpu_s(broker)
    for i, (topic, value, key, hdrs) in enumerate(items):
        while True:
            try:
                p.produce(topic, value, key, -1, None, None, 0, hdrs)  # as the sink calls it
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(60)
    res = _result(len(events), t0, c0, b0, broker)
    if left:
        raise SystemExit(f"{left} message(s) not delivered")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--linger-ms", type=float, help="kafka.linger_ms for both paths (default: the config's)"
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds of each path first")
    ap.add_argument(
        "--batch", type=int, default=KAFKA_BATCH_RECORDS, help="records per publisher batch"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    events = make_events(args.events)
    # The publisher stage freezes its start-up objects (``gc.freeze``); so does this
    # process, or every full collection would walk the events made above, which a
    # daemon does not hold.
    gc.freeze()
    size = sum(len(e.pack()) + 16 for e in events)
    broker = TansuBroker()
    broker.start()
    extra: dict[str, Any] = {} if args.linger_ms is None else {"linger_ms": args.linger_ms}
    cfg = KafkaConfig(enabled=True, bootstrap_servers=broker.bootstrap, **extra)
    name = segment_name(new_run_id(), "records", "benchevents")
    ring = RecordRing.create(name, 1 << max(20, (size * 2).bit_length()))
    load_before = os.getloadavg()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*load_before), flush=True)
    results: dict[str, list[float]] = {"publisher": [], "raw": []}
    cpu: dict[str, list[float]] = {"publisher": [], "raw": []}
    broker_cpu: dict[str, list[float]] = {"publisher": [], "raw": []}
    assert broker.proc is not None
    pid = broker.proc.pid
    try:
        with tempfile.TemporaryDirectory() as tmp:
            warm = events[: min(len(events), 20_000)]
            for _ in range(args.warmup):  # first runs pay for allocator growth and caches
                run_publisher(cfg, ring, warm, Path(tmp), args.batch, pid)
                run_raw(cfg, warm, pid)
            for r in range(args.rounds):
                order = ["publisher", "raw"] if r % 2 == 0 else ["raw", "publisher"]
                for which in order:
                    if which == "publisher":
                        rate, own, brk = run_publisher(
                            cfg, ring, events, Path(tmp), args.batch, pid
                        )
                    else:
                        rate, own, brk = run_raw(cfg, events, pid)
                    results[which].append(rate)
                    cpu[which].append(own)
                    broker_cpu[which].append(brk)
                    print(
                        f"round {r + 1} {which:9s} {rate:10.0f} events/s  cpu/event: "
                        f"{own:5.2f} us here, {brk:5.2f} us broker",
                        flush=True,
                    )
    finally:
        ring.close()
        ring.unlink()
        broker.stop()
    load_after = os.getloadavg()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*load_after))
    med = {k: statistics.median(v) for k, v in results.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_broker = {k: statistics.median(v) for k, v in broker_cpu.items()}
    ratio = med["publisher"] / med["raw"]
    paired = statistics.median(
        p / r for p, r in zip(results["publisher"], results["raw"], strict=True)
    )
    print(f"\n{'path':10s} {'median events/s':>16s} {'cpu us/event here':>18s} {'broker':>7s}")
    for k in ("publisher", "raw"):
        print(f"{k:10s} {med[k]:16.0f} {med_cpu[k]:18.2f} {med_broker[k]:7.2f}")
    print(f"ratio publisher/raw: {ratio:.2f} (goal >= 0.80)")
    print(f"median of the rounds' own ratios: {paired:.2f}")
    if args.json:
        out: dict[str, Any] = {
            "events": args.events,
            "rounds": args.rounds,
            "batch": args.batch,
            "linger_ms": cfg.linger_ms,
            "per_round": results,
            "median": med,
            "cpu_us_per_event": {"per_round": cpu, "median": med_cpu},
            "broker_cpu_us_per_event": {"per_round": broker_cpu, "median": med_broker},
            "ratio": ratio,
            "ratio_paired_median": paired,
            "load_average": {"before": load_before, "after": load_after},
            "machine": platform.platform(),
            "python": platform.python_version(),
        }
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
