"""Inference backends and model preparation: frames in, per-frame detections out.

`base` holds the contract (`Engine`, `Detections`, `EngineOptions`); `preprocess` and
`postprocess` are the one letterbox and the one YOLO decode + NMS that every backend
shares, and `yolo` the frame path around a backend's forward pass; `registry` chooses
and builds the backend for a model file; `onnx_backend` (ONNX Runtime), `torch_backend`
(PyTorch, optional) and `tensorrt_backend` (TensorRT, optional) are the engines;
`batcher` and `breaker` are the inference worker's scheduling and failure logic (pure,
no backend); `model_source` finds model files (path, cache, download); `manifest` reads
the model manifest; `models` imports, lists and exports model files; `faults` is a
test-only failing engine.

This package must never import itsd.analytics, itsd.stages, itsd.control, itsd.monitor
or itsd.cli, and never import torch, tensorrt or ultralytics at import time.
"""

from __future__ import annotations

from itsd.engines.base import COCO_NAMES, Detections, Engine, EngineOptions
from itsd.engines.model_source import BACKENDS, default_model_dir, file_sha256, resolve_model
from itsd.engines.onnx_backend import OnnxEngine
from itsd.engines.postprocess import decode_yolo, nms
from itsd.engines.preprocess import Letterbox, letterbox_into, letterbox_params
from itsd.engines.registry import choose_backend, create_cpu_fallback, create_engine

__all__ = [
    "BACKENDS",
    "COCO_NAMES",
    "Detections",
    "Engine",
    "EngineOptions",
    "Letterbox",
    "OnnxEngine",
    "choose_backend",
    "create_cpu_fallback",
    "create_engine",
    "decode_yolo",
    "default_model_dir",
    "file_sha256",
    "letterbox_into",
    "letterbox_params",
    "nms",
    "resolve_model",
]
