"""The daemon runs a PyTorch checkpoint (.pt) through the PyTorch backend, chosen by
file type: the inference worker loads it with torch (in the spawned worker process),
every frame gets a detection event and health names the backend.

The checkpoint is YOLO11n built from Ultralytics' yaml with random weights (no weights
can be downloaded here). Skips without torch and ultralytics (extra ``torch``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, wait_until

MISSING = [p for p in ("torch", "ultralytics") if importlib.util.find_spec(p) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (extra torch)"),
]


def test_a_pt_model_runs_on_the_torch_backend(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    pt = tmp_path / "rand11n.pt"
    net = DetectionModel("yolo11n.yaml", verbose=False)  # type: ignore[no-untyped-call]
    torch.save({"model": net, "train_args": {"imgsz": 320}}, pt)
    d = start_daemon(
        cameras=[{"id": "c0", "source": "pattern://moving?width=320&height=240&fps=5"}],
        extra={"model": {"path": str(pt), "confidence": 0.3}},
    )
    d.wait_log(r"torch \S+: rand11n\.pt on cpu, input 320x320, fp32, 80 classes", timeout=90)
    d.wait_log(r"model \S+rand11n\.pt loaded on torch", timeout=30)
    wait_until(lambda: len(d.detections()) >= 10, 60, "detection events", d.log_path)
    assert d.status_json()["backend"] == "torch"
    assert d.stop().returncode == 0
