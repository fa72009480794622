"""`itsd models export` for real: a PyTorch checkpoint to ONNX (fp32, fp16, int8), each
export loaded and run by the ONNX Runtime backend. Skips without torch/ultralytics/onnx.

The checkpoint is YOLO11n built from Ultralytics' yaml with seeded random weights (no
weights can be downloaded here); the exports must keep its input size, batch and classes.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from itsd.engines.base import EngineOptions
from itsd.engines.models import export_model, import_model, list_models
from itsd.engines.registry import create_engine

MISSING = [p for p in ("torch", "ultralytics", "onnx") if importlib.util.find_spec(p) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs {', '.join(MISSING)}: pip install itsd[torch]"
    ),
]


def test_export_pt_to_onnx_in_three_precisions(tmp_path: Path) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    pt = tmp_path / "rand11n.pt"
    net = DetectionModel("yolo11n.yaml", verbose=False)  # type: ignore[no-untyped-call]
    torch.save({"model": net, "train_args": {"imgsz": 320}}, pt)
    cache = tmp_path / "cache"
    import_model(pt, cache)
    steps: list[str] = []
    made = [
        export_model("rand11n.pt", "onnx", "fp32", 320, 0, cache, progress=steps.append),
        export_model("rand11n.pt", "onnx", "fp16", 256, 0, cache),
        export_model("rand11n.pt", "onnx", "int8", 320, 2, cache),
    ]
    assert any(s.startswith("tracing") for s in steps)
    assert [(i.file, i.precision, i.input_size, i.batch, i.classes) for i in made] == [
        ("rand11n_320.onnx", "fp32", (320, 320), None, 80),
        ("rand11n_256_fp16.onnx", "fp16", (256, 256), None, 80),
        ("rand11n_320_int8_b2.onnx", "int8", (320, 320), 2, 80),
    ]
    assert {i.file for i in list_models(cache)} == {"rand11n.pt", *(i.file for i in made)}
    assert all(i.origin.startswith("exported from rand11n.pt") for i in made)
    frames = [np.full((240, 320, 3), 90, np.uint8), np.full((120, 200, 3), 30, np.uint8)] * 2
    for info in made:
        engine = create_engine(cache / info.file, "auto", EngineOptions(confidence=0.01))
        assert engine.input_size == info.input_size
        assert len(engine.class_names) == 80
        assert len(engine.infer(frames)) == 4
        engine.close()
