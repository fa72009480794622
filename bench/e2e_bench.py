"""End-to-end benchmark: itsd beside the machine's limit and what a Python user writes.

    .venv/bin/python bench/e2e_bench.py [--cameras 4] [--rounds 3] [--json F] [--png F]
        [--ultralytics-python ~/.cache/itsd/ultralytics-venv/bin/python]

One run, the same machine, model and clip; the contenders run in rotation, ``--rounds``
times, and the medians are reported (these machines are noisy):

* **(a) limit**: one single-threaded ONNX Runtime session per core, in parallel
  processes, on pre-decoded, pre-letterboxed frames, every loop started together and run
  for the same 8 s: the most frames/s this machine's CPU gives the model (from
  ``bench/pipeline_bench.py``);
* **(b) itsd**: ``itsd start`` with ``--cameras`` copies of the clip as lossless file
  sources (every frame, as fast as the machine allows): decode, inference, tracking,
  counting lines and events written to a JSONL file; frames/s = detection events / wall
  time;
* **(c) Ultralytics track**: what a Python user writes instead: one thread per camera,
  each with its own ``YOLO(model, task="detect")`` and a ``model.track(source=clip,
  stream=True, imgsz=320, persist=True, classes=<vehicles>)`` loop over the same clip
  (OpenCV decode, letterbox, ONNX Runtime, NMS, ByteTrack; no events). It runs in the
  separate environment that ``bench/setup_ultralytics.sh`` makes (the project's venv has
  the CPU torch, beside which PyPI's torchvision does not import), as a subprocess:
  ``bench/ultralytics_track.py`` exchanging JSON files. Without that environment (c) is
  left out and the report says so;
* **(c') hand-written**: the same without Ultralytics: one thread per camera, each
  decoding its clip with PyAV, letterboxing with OpenCV, running its own single-threaded
  ONNX Runtime session and NMS, with no tracking and no events.

The contenders' order rotates from round to round, and each run records the load average
before it (other work on a shared machine shows up there).

Then paced runs measure latency at half load: the cameras play the clip in real time at
a frame rate totalling half of (b)'s throughput; for (b) the time from each frame's
capture to its event being readable in the JSONL file gives p50/p95/p99, for (c) the
time from each frame's capture time to its ``track`` result (no events to publish).

It prints frames/s, CPU ms per frame of (b), (c) and (c') (CPU time of the contender's
processes, which other load on the machine bends far less than frames/s), the ratios
(b)/(a), (b)/(c) and (b)/(c') and the latencies, writes a
JSON report (``--json``) and a PNG bar chart (``--png``), for ``bench/README.md``.
This benchmark must never install anything: the Ultralytics environment is made by
``bench/setup_ultralytics.sh``, by hand, outside the test command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import onnxruntime as ort
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from loadgen import Latencies, pct, tail_jsonl  # noqa: E402
from pipeline_bench import DEFAULT_CLIP, DEFAULT_MODEL, raw_all_cores, run_pipeline  # noqa: E402
from ultralytics_track import PACED_SKIP, make_request, parse_result, percentile  # noqa: E402

from itsd.analytics.classes import VEHICLE_CLASS_IDS  # noqa: E402
from itsd.engines.base import EngineOptions  # noqa: E402
from itsd.engines.postprocess import decode_yolo  # noqa: E402
from itsd.engines.preprocess import letterbox_into, letterbox_params  # noqa: E402

ULTRALYTICS_VENV = Path(
    os.environ.get("ITSD_ULTRALYTICS_VENV", Path.home() / ".cache" / "itsd" / "ultralytics-venv")
)
LIMIT, ITSD, TRACK, HAND = "(a) limit", "(b) itsd", "(c) ultralytics track", "(c') hand-written"


def ultralytics_track(
    python: Path,
    model: Path,
    clip: Path,
    cameras: int,
    fps: float = 0.0,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """Run contender (c) in the Ultralytics environment's ``python``; its checked result.

    ``fps`` 0: every frame as fast as possible (result ``fps``); ``fps`` > 0: cameras
    paced at that rate for ``seconds`` (result ``latency_ms``).
    """
    inp = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0]
    req = make_request(  # absolute paths: the worker runs in a temporary folder
        model.resolve(),
        clip.resolve(),
        cameras,
        sorted(VEHICLE_CLASS_IDS),
        int(inp.shape[2]),
        fps,
        seconds,
    )
    with tempfile.TemporaryDirectory() as tmp:
        rq, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        rq.write_text(json.dumps(req))
        proc = subprocess.run(
            [str(python), str(REPO / "bench" / "ultralytics_track.py"), str(rq), str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp,  # anything Ultralytics writes stays in the temporary folder
            env={**os.environ, "YOLO_OFFLINE": "1"},
        )
        if not out.exists():
            raise SystemExit(
                f"Ultralytics worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        try:
            return parse_result(json.loads(out.read_text()), req)
        except ValueError as exc:
            raise SystemExit(f"Ultralytics worker: {exc}\n{proc.stderr[-3000:]}") from exc


def cpu_seconds() -> float:
    """CPU time of this process and of its children waited for (and theirs), user + system."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def handwritten(model: Path, clip: Path, cameras: int, max_frames: int = 0) -> tuple[float, int]:
    """Frames/s and frames of one thread per camera: PyAV decode, letterbox, ORT, NMS."""
    counts = [0] * cameras

    def camera(i: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        h, w = int(inp.shape[2]), int(inp.shape[3])
        tensor = np.empty((1, 3, h, w), np.float32)
        options = EngineOptions(confidence=0.25, iou=0.45)
        with av.open(str(clip)) as c:
            for n, frame in enumerate(c.decode(video=0)):
                if max_frames and n >= max_frames:
                    break
                img = frame.to_ndarray(format="rgb24")
                params = letterbox_params(img.shape[0], img.shape[1], h, w)
                letterbox_into(img, tensor[0], params)
                out = sess.run(None, {inp.name: tensor})[0]
                decode_yolo(out, params, img.shape[0], img.shape[1], options)
                counts[i] += 1

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(cameras)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts)


def paced_latency(
    model: Path, clip: Path, cameras: int, fps: float, seconds: float
) -> dict[str, float]:
    """Frame-to-event latency (ms) with ``cameras`` real-time cameras at ``fps`` each."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        events = d / "events.jsonl"
        cfg = {
            "model": {"path": str(model)},
            "outputs": {"jsonl_path": str(events)},
            "server": {"grpc_port": 0, "monitoring_port": 0},
            "pid_file": str(d / "itsd.pid"),
            "state_dir": str(d / "state"),
            "cameras": [
                {
                    "id": f"loadgen-{i}",
                    "source": str(clip),
                    "loop": True,
                    "target_fps": fps,
                    "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
                }
                for i in range(cameras)
            ],
        }
        (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        events.touch()
        lat = Latencies("loadgen-")
        reader = threading.Thread(target=tail_jsonl, args=(events, lat), daemon=True)
        reader.start()
        with open(d / "itsd.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "itsd", "start", "--config", str(d / "c.yaml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                time.sleep(10.0)  # start-up and warm-up
                n0 = len(lat.snapshot()[0])
                time.sleep(seconds)
                samples = lat.snapshot()[0][n0:]
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
                lat.stop.set()
    return {
        "frames": len(samples),
        "p50_ms": round(pct(samples, 50) * 1000, 1),
        "p95_ms": round(pct(samples, 95) * 1000, 1),
        "p99_ms": round(pct(samples, 99) * 1000, 1),
    }


def chart(report: dict[str, Any], path: Path) -> None:
    """A bar chart of the median frames/s of the contenders (OpenCV, no matplotlib)."""
    med = report["median_fps"]
    names = list(med)
    w, h, pad = 720, 380, 60
    img = np.full((h, w, 3), 255, np.uint8)
    top = max(med.values()) * 1.15 or 1.0
    bar = (w - 2 * pad) // (2 * len(names))
    colours = [(90, 90, 90), (40, 140, 40), (40, 90, 200), (200, 120, 40)]
    for i, name in enumerate(names):
        x = pad + bar // 2 + i * 2 * bar
        y = int(h - pad - (h - 2 * pad) * med[name] / top)
        cv2.rectangle(img, (x, y), (x + bar, h - pad), colours[i % len(colours)], -1)
        cv2.putText(img, f"{med[name]:.0f}", (x, y - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1)
        cv2.putText(img, name, (x - 10, h - pad + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1)
    title = f"frames/s, {report['cameras']} cameras, {report['machine']}"
    cv2.putText(img, title, (pad, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 0, 1)
    cv2.line(img, (pad, h - pad), (w - pad, h - pad), (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-s", type=float, default=30.0, help="length of the paced runs")
    ap.add_argument(
        "--ultralytics-python",
        type=Path,
        default=ULTRALYTICS_VENV / "bin" / "python",
        help="interpreter of the environment bench/setup_ultralytics.sh made, for (c)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args()

    track_py: Path = args.ultralytics_python
    have_track = track_py.exists()
    if not have_track:
        print(
            f"(c) left out: no Ultralytics environment at {track_py} "
            "(make it with: bash bench/setup_ultralytics.sh)",
            file=sys.stderr,
        )
    versions: dict[str, str] = {}

    # Each returns (frames/s, CPU ms per frame or None). CPU time per frame does not
    # depend on how much of the machine others take, unlike frames/s: (b)'s includes the
    # daemon's start-up and shutdown in all its processes, (c)'s and (c')'s do not
    # include imports; (a)'s processes decode and letterbox outside the timed loop, so
    # it has none.
    def run_limit() -> tuple[float, float | None]:
        return raw_all_cores(args.model, args.clip), None

    def run_itsd() -> tuple[float, float | None]:
        c0 = cpu_seconds()
        dets, wall = run_pipeline(args.model, args.clip, False, args.cameras)
        return len(dets) / wall, (cpu_seconds() - c0) * 1000 / len(dets)

    def run_track() -> tuple[float, float | None]:
        res = ultralytics_track(track_py, args.model, args.clip, args.cameras)
        versions.update(res["versions"])
        return float(res["fps"]), float(res["cpu_s"]) * 1000 / res["frames"]

    def run_hand() -> tuple[float, float | None]:
        c0 = cpu_seconds()
        fps, frames = handwritten(args.model, args.clip, args.cameras)
        return fps, (cpu_seconds() - c0) * 1000 / frames

    contenders: dict[str, Any] = {LIMIT: run_limit, ITSD: run_itsd, HAND: run_hand}
    if have_track:
        contenders[TRACK] = run_track
    names = [n for n in (LIMIT, ITSD, TRACK, HAND) if n in contenders]
    runs: dict[str, list[float]] = {n: [] for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    cpu_ms: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            loads[name].append(round(os.getloadavg()[0], 2))
            fps, cpu = contenders[name]()
            runs[name].append(round(float(fps), 2))
            if cpu is not None:
                cpu_ms[name].append(round(cpu, 1))
            print(
                f"round {r + 1}: {name} {runs[name][-1]:.1f} frames/s, "
                f"{cpu_ms[name][-1] if cpu is not None else '-'} CPU ms/frame "
                f"(load {loads[name][-1]})",
                flush=True,
            )
    med = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    med_cpu = {k: round(statistics.median(v), 1) for k, v in cpu_ms.items() if v}

    half = med[ITSD] / 2 / args.cameras
    latency = paced_latency(args.model, args.clip, args.cameras, half, args.latency_s)
    track_latency: dict[str, float] | None = None
    if have_track:
        lat = ultralytics_track(
            track_py, args.model, args.clip, args.cameras, half, args.latency_s
        )["latency_ms"]
        track_latency = {
            "frames": len(lat),
            # what the cameras sent after the start-up frames: fewer means (c) fell behind
            "frames_sent": round(args.cameras * (half * args.latency_s + 1 - PACED_SKIP)),
            **{f"p{q}_ms": round(percentile(lat, q), 1) for q in (50, 95, 99)},
        }
    cores = len(os.sched_getaffinity(0))

    def ratio(name: str) -> float | None:
        return round(med[ITSD] / med[name], 2) if name in med else None

    report: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{cores} cores, {platform.processor() or platform.machine()}",
        "model": args.model.name,
        "clip": args.clip.name,
        "cameras": args.cameras,
        "rounds": runs,
        "load_average_before": loads,
        "median_fps": med,
        "cpu_ms_per_frame": cpu_ms,
        "median_cpu_ms_per_frame": med_cpu,
        "itsd_over_limit": ratio(LIMIT),
        "itsd_over_ultralytics": ratio(TRACK),
        "itsd_over_handwritten": ratio(HAND),
        "ultralytics": versions or None,
        "half_load": {"fps_per_camera": round(half, 1), **latency},
        "half_load_ultralytics": track_latency,
    }
    print()
    for k, v in med.items():
        cpu_txt = f"{med_cpu[k]:>7.1f} CPU ms/frame" if k in med_cpu else " " * 20
        print(f"{k:<24}{v:>8.1f} frames/s {cpu_txt}  rounds {runs[k]}  load {loads[k]}")
    print(
        f"(b)/(a) {report['itsd_over_limit']}   (b)/(c) {report['itsd_over_ultralytics']}"
        f"   (b)/(c') {report['itsd_over_handwritten']}"
    )
    print(
        f"half load ({args.cameras} x {half:.1f} fps): itsd frame-to-event latency ms "
        f"p50 {latency['p50_ms']}  p95 {latency['p95_ms']}  p99 {latency['p99_ms']}"
    )
    if track_latency:
        print(
            f"half load ({args.cameras} x {half:.1f} fps): Ultralytics frame-to-result "
            f"latency ms p50 {track_latency['p50_ms']}  p95 {track_latency['p95_ms']}  "
            f"p99 {track_latency['p99_ms']}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        chart(report, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
