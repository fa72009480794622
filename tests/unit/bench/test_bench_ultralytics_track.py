"""The JSON protocol between bench/e2e_bench.py and its Ultralytics worker (no Ultralytics)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
WORKER = REPO / "bench" / "ultralytics_track.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ultralytics_track", WORKER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ut = _load()


def _result(
    req: dict[str, Any], frames: int = 10, tracked: int = 5, **extra: Any
) -> dict[str, Any]:
    cams = [
        {"frames": frames, "boxes": 3 * frames, "tracked_frames": tracked, "latency_ms": []}
        for _ in range(req["cameras"])
    ]
    return {
        "protocol": ut.PROTOCOL,
        "versions": {},
        "cameras": cams,
        "errors": [],
        "wall_s": 2.0,
        **extra,
    }


def test_request_survives_json_and_is_checked_on_the_worker_side() -> None:
    req = ut.make_request(Path("/m.onnx"), Path("/c.mp4"), 4, [7, 2, 5, 3], 320)
    back = ut.check_request(json.loads(json.dumps(req)))
    assert back == req
    assert back["classes"] == [2, 3, 5, 7]
    assert back["fps"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cameras": 0}, "cameras"),
        ({"fps": -1.0}, "negative"),
        ({"fps": 5.0, "seconds": 0.0}, "seconds"),
    ],
)
def test_bad_requests_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"cameras": 2, "classes": [2], "fps": 0.0, "seconds": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ut.make_request(Path("m"), Path("c"), **args)


def test_worker_refuses_other_protocols_and_missing_keys() -> None:
    req = ut.make_request(Path("m"), Path("c"), 1, [2])
    with pytest.raises(ValueError, match="protocol"):
        ut.check_request({**req, "protocol": 99})
    del req["clip"]
    with pytest.raises(ValueError, match="clip"):
        ut.check_request(req)


def test_result_gives_frames_per_second_over_all_cameras() -> None:
    req = ut.make_request(Path("m"), Path("c"), 3, [2])
    res = ut.parse_result(_result(req, frames=10), req)
    assert res["frames"] == 30
    assert res["fps"] == pytest.approx(15.0)
    assert "latency_ms" not in res


def test_paced_result_gathers_every_cameras_latencies() -> None:
    req = ut.make_request(Path("m"), Path("c"), 2, [2], fps=4.0, seconds=10.0)
    raw = _result(req, tracked=0)
    raw["cameras"][0]["latency_ms"] = [10.0, 20.0]
    raw["cameras"][1]["latency_ms"] = [30.0]
    res = ut.parse_result(raw, req)
    assert sorted(res["latency_ms"]) == [10.0, 20.0, 30.0]
    raw["cameras"][0]["latency_ms"] = raw["cameras"][1]["latency_ms"] = []
    with pytest.raises(ValueError, match="latencies"):
        ut.parse_result(raw, req)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(protocol=0), "protocol"),
        (lambda r: r["cameras"].pop(), "cameras"),
        (lambda r: r.update(errors=["camera 1: FileNotFoundError: x"]), "FileNotFoundError"),
        (lambda r: [c.update(frames=0) for c in r["cameras"]], "no frames"),
        (lambda r: [c.update(tracked_frames=0) for c in r["cameras"]], "tracker"),
    ],
)
def test_results_that_do_not_fit_the_request_are_refused(change: Any, message: str) -> None:
    req = ut.make_request(Path("m"), Path("c"), 2, [2])
    raw = _result(req)
    change(raw)
    with pytest.raises(ValueError, match=message):
        ut.parse_result(raw, req)


def test_percentile_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert ut.percentile(xs, 50) == 50.0
    assert ut.percentile(xs, 99) == 99.0
    assert ut.percentile([7.0], 95) == 7.0
    assert ut.percentile([], 50) != ut.percentile([], 50)  # NaN


def test_module_imports_only_the_standard_library() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('w', {str(WORKER)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "bad = [n for n in ('ultralytics', 'torch', 'numpy', 'cv2', 'itsd') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_worker_without_its_two_files_prints_usage() -> None:
    proc = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "REQUEST OUTPUT" in proc.stderr
