"""Inference backends and model preparation: frames in, per-frame detections out.

`base` holds the contract (`Engine`, `Detections`, `EngineOptions`); `preprocess` and
`postprocess` are the one letterbox and the one YOLO decode + NMS that every backend
shares; `onnx_backend` is the ONNX Runtime engine; `model_source` finds model files
(path, cache, download) and builds the engine for one; `manifest` reads the model
manifest.

This package must never import itsd.analytics, itsd.stages, itsd.control, itsd.monitor
or itsd.cli, and never import torch, tensorrt or ultralytics at import time.
"""

from __future__ import annotations

from itsd.engines.base import COCO_NAMES, Detections, Engine, EngineOptions
from itsd.engines.model_source import (
    BACKENDS,
    create_engine,
    default_model_dir,
    file_sha256,
    resolve_model,
)
from itsd.engines.onnx_backend import OnnxEngine
from itsd.engines.postprocess import decode_yolo, nms
from itsd.engines.preprocess import Letterbox, letterbox_into, letterbox_params

__all__ = [
    "BACKENDS",
    "COCO_NAMES",
    "Detections",
    "Engine",
    "EngineOptions",
    "Letterbox",
    "OnnxEngine",
    "create_engine",
    "decode_yolo",
    "default_model_dir",
    "file_sha256",
    "letterbox_into",
    "letterbox_params",
    "nms",
    "resolve_model",
]
