"""The GPU check's parts that run without a GPU: gpu_e2e's itsd configuration stays
valid as the configuration grows, RGBP frames come out planar, and the shell scripts parse.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

from gpu_e2e import _planar, itsd_config  # noqa: E402

from itsd.config import parse_config  # noqa: E402


def test_the_e2e_configuration_is_valid_and_runs_on_gpu_0(tmp_path: Path) -> None:
    args = argparse.Namespace(cameras=3, decode_workers=2, nvdec_per_worker=1)
    cfg = parse_config(itsd_config(tmp_path / "m.pt", tmp_path / "c.mp4", args, tmp_path))
    assert cfg.gpus == [0]
    assert cfg.model.backend == "torch" and cfg.model.precision == "fp16"
    assert [c.decoder for c in cfg.cameras] == ["auto"] * 3
    assert cfg.performance.nvdec_cameras_per_worker == 1
    assert all(not c.realtime and c.max_width == 640 for c in cfg.cameras)


def test_rgbp_frames_come_out_as_three_planes() -> None:
    torch = pytest.importorskip("torch")
    stacked = torch.arange(3 * 4 * 5, dtype=torch.uint8).reshape(12, 5)  # (3H, W)
    planes = _planar(stacked)
    assert planes.shape == (3, 4, 5) and torch.equal(planes[1], stacked[4:8])
    hwc = torch.zeros((4, 5, 3), dtype=torch.uint8)
    assert _planar(hwc).shape == (3, 4, 5)
    assert _planar(planes) is planes


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_wheels.sh"])
def test_the_scripts_parse(script: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(BENCH / script)], check=True)


def test_letterbox_bench_dry_run_measures_the_cpu_and_says_why_not_the_gpu(
    tmp_path: Path, media_dir: Path
) -> None:
    out = tmp_path / "lb.json"
    cmd = [sys.executable, str(BENCH / "letterbox_bench.py"), "--clip"]
    cmd += [str(media_dir / "street_overhead_dusk.mp4"), "--imgsz", "320", "--batches", "1,2"]
    cmd += ["--seconds", "0.05", "--rounds", "1", "--dry", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    assert [(r["frames"], r["batch"]) for r in report["results"]] == [
        ("640x360", 1),
        ("640x360", 2),
        ("1920x1080", 1),
        ("1920x1080", 2),
    ]
    assert all(r["cpu"] > 0 for r in report["results"])
    if not report["gpu"]:
        assert report["why_not"] and all("gpu" not in r for r in report["results"])
