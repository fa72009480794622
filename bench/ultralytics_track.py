"""Contender (c) of ``bench/e2e_bench.py``: one Ultralytics ``track`` loop per camera.

What a Python user writes instead of itsd: one thread per camera, each with its own
``YOLO(model, task="detect")`` and ``for r in model.track(source=clip, stream=True,
imgsz=320, persist=True, verbose=False, classes=...)`` (Ultralytics decodes the clip with
OpenCV, letterboxes, runs the ONNX file with ONNX Runtime, applies NMS and its ByteTrack
tracker). It runs in the separate environment that ``bench/setup_ultralytics.sh`` makes
(PyPI's torch + torchvision pair; the project's venv keeps the CPU torch, beside which
torchvision does not import):

    ~/.cache/itsd/ultralytics-venv/bin/python bench/ultralytics_track.py REQUEST OUTPUT

REQUEST and OUTPUT are JSON files (:func:`make_request`, :func:`parse_result`). Two modes:

* ``fps`` 0: every frame of the clip as fast as the machine allows; the result's
  ``fps`` is all cameras' frames divided by the wall time from the threads' start (model
  loading included, as in the hand-written loop) to the last camera's end;
* ``fps`` > 0: each camera is paced like a live camera at that rate for ``seconds``: frame
  k is read at ``t0 + k / fps`` (t0 = the camera's first result, so warm-up is not in it)
  and its latency is the time from then to its result (decode, inference, NMS and
  tracking; there are no events to publish).

This module imports only the standard library at module level, so the project's side can
use the protocol helpers without Ultralytics; it must never import itsd, and never touch
the network (``YOLO_OFFLINE=1`` is set before Ultralytics is imported).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROTOCOL = 1
#: Frames at the start of a paced camera left out of its latencies (start-up).
PACED_SKIP = 5


def make_request(
    model: Path,
    clip: Path,
    cameras: int,
    classes: list[int],
    imgsz: int = 320,
    fps: float = 0.0,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The request the worker reads; ``fps`` > 0 asks for the paced (latency) mode."""
    if cameras < 1:
        raise ValueError(f"cameras must be at least 1, got {cameras}")
    if fps < 0 or seconds < 0:
        raise ValueError(f"fps and seconds must not be negative, got {fps} and {seconds}")
    if fps > 0 and seconds <= 0:
        raise ValueError("a paced run needs seconds > 0")
    return {
        "protocol": PROTOCOL,
        "model": str(model),
        "clip": str(clip),
        "cameras": int(cameras),
        "classes": sorted(int(c) for c in classes),
        "imgsz": int(imgsz),
        "fps": float(fps),
        "seconds": float(seconds),
    }


def check_request(req: dict[str, Any]) -> dict[str, Any]:
    """``req`` validated (the worker's side of :func:`make_request`); ValueError if bad."""
    if req.get("protocol") != PROTOCOL:
        raise ValueError(f"request protocol {req.get('protocol')!r}, expected {PROTOCOL}")
    missing = {"model", "clip", "cameras", "classes", "imgsz", "fps", "seconds"} - set(req)
    if missing:
        raise ValueError(f"request lacks {sorted(missing)}")
    return make_request(
        Path(req["model"]),
        Path(req["clip"]),
        int(req["cameras"]),
        list(req["classes"]),
        int(req["imgsz"]),
        float(req["fps"]),
        float(req["seconds"]),
    )


def parse_result(result: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The worker's result checked against its request; ValueError if it does not fit."""
    if result.get("protocol") != PROTOCOL:
        raise ValueError(f"result protocol {result.get('protocol')!r}, expected {PROTOCOL}")
    cams = result.get("cameras")
    if not isinstance(cams, list) or len(cams) != request["cameras"]:
        raise ValueError(f"result has {cams!r} for {request['cameras']} cameras")
    if result.get("errors"):
        raise ValueError("worker camera failed: " + "; ".join(result["errors"]))
    frames = sum(int(c["frames"]) for c in cams)
    wall = float(result["wall_s"])
    if frames <= 0 or wall <= 0:
        raise ValueError(f"no frames processed ({frames} frames in {wall} s)")
    if request["fps"] <= 0 and not any(int(c["tracked_frames"]) for c in cams):
        raise ValueError("no frame carried track ids: the tracker did not run")
    out = dict(result)
    out["frames"] = frames
    out["fps"] = frames / wall
    if request["fps"] > 0:
        lat = [float(x) for c in cams for x in c.get("latency_ms", [])]
        if not lat:
            raise ValueError("paced run returned no latencies")
        out["latency_ms"] = lat
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _camera(req: dict[str, Any], i: int, out: list[dict[str, Any]], errors: list[str]) -> None:
    from ultralytics.models import YOLO  # the class `from ultralytics import YOLO` gives

    rec: dict[str, Any] = {"frames": 0, "boxes": 0, "tracked_frames": 0, "latency_ms": []}
    out[i] = rec
    try:
        model = YOLO(req["model"], task="detect")
        fps, seconds = req["fps"], req["seconds"]
        t0 = 0.0
        results = model.track(
            source=req["clip"],
            stream=True,
            imgsz=req["imgsz"],
            persist=True,
            verbose=False,
            classes=req["classes"],
        )
        for k, r in enumerate(results):
            now = time.perf_counter()
            rec["frames"] += 1
            if r.boxes is not None:
                rec["boxes"] += len(r.boxes)
                rec["tracked_frames"] += int(r.boxes.id is not None)
            if fps <= 0:
                continue
            if k == 0:
                t0 = now
            elif k >= PACED_SKIP:
                rec["latency_ms"].append(round((now - (t0 + k / fps)) * 1000.0, 2))
            if now - t0 >= seconds:
                break
            # The next frame is "captured" at t0 + (k + 1) / fps: wait for it, as the loop
            # would for a live camera, then let the generator read it.
            time.sleep(max(0.0, t0 + (k + 1) / fps - time.perf_counter()))
    except Exception as exc:  # reported back, not swallowed
        errors.append(f"camera {i}: {type(exc).__name__}: {exc}")


def worker(request_path: Path, output_path: Path) -> int:
    """Run the request in ``request_path``, write the result to ``output_path``."""
    req = check_request(json.loads(request_path.read_text()))
    os.environ["YOLO_OFFLINE"] = "1"
    import importlib

    import onnxruntime
    import torch
    import ultralytics

    torchvision = importlib.import_module("torchvision")  # no type stubs; version only

    n = req["cameras"]
    cams: list[dict[str, Any]] = [{} for _ in range(n)]
    errors: list[str] = []
    threads = [threading.Thread(target=_camera, args=(req, i, cams, errors)) for i in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result = {
        "protocol": PROTOCOL,
        "versions": {
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "cameras": cams,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": cpu,  # this process's CPU time over the loops (imports not included)
    }
    output_path.write_text(json.dumps(result))
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    return worker(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
