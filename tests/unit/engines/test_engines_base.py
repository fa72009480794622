"""Unit tests of the engine contract: Detections and EngineOptions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from itsd.engines.base import COCO_NAMES, Detections, EngineOptions
from itsd.errors import ConfigError


def test_empty_detections_have_the_right_shapes_and_dtypes() -> None:
    det = Detections.empty()
    assert len(det) == 0
    assert det.boxes.shape == (0, 4) and det.boxes.dtype == np.float32
    assert det.scores.shape == (0,) and det.scores.dtype == np.float32
    assert det.class_ids.shape == (0,) and det.class_ids.dtype == np.int32


def test_detections_len_and_immutability() -> None:
    det = Detections(
        boxes=np.zeros((2, 4), np.float32),
        scores=np.ones(2, np.float32),
        class_ids=np.array([2, 7], np.int32),
    )
    assert len(det) == 2
    with pytest.raises(AttributeError):
        det.scores = np.zeros(2, np.float32)  # type: ignore[misc]


def test_default_options() -> None:
    opts = EngineOptions()
    assert (opts.confidence, opts.iou, opts.max_detections) == (0.25, 0.45, 300)
    assert (opts.precision, opts.intra_op_threads, opts.classes) == ("fp32", 1, None)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"confidence": 1.5}, "confidence"),
        ({"iou": 0.0}, "iou"),
        ({"max_detections": 0}, "max_detections"),
        ({"precision": "bf16"}, "precision"),
        ({"intra_op_threads": 0}, "intra_op_threads"),
        ({"classes": (2, -1)}, "classes"),
    ],
)
def test_invalid_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"EngineOptions.{field}"):
        EngineOptions(**kwargs)  # type: ignore[arg-type]


def test_coco_names() -> None:
    assert len(COCO_NAMES) == 80
    assert (COCO_NAMES[0], COCO_NAMES[2], COCO_NAMES[7], COCO_NAMES[79]) == (
        "person",
        "car",
        "truck",
        "toothbrush",
    )


def test_engines_package_imports_no_forbidden_modules() -> None:
    code = (
        "import sys, itsd.engines\n"
        "bad = ('itsd.analytics', 'itsd.stages', 'itsd.control', 'itsd.monitor', 'itsd.cli',\n"
        "       'torch', 'torchvision', 'ultralytics', 'tensorrt')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m.startswith(bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stdout
