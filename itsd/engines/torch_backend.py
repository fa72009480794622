"""PyTorch backend: Ultralytics YOLO detection models run by our own code (no predictor).

Loads an Ultralytics checkpoint (``.pt``: the pickled ``DetectionModel`` under ``ema`` or
``model``) or builds a network from an Ultralytics model yaml (``yolo11n.yaml``; random
weights, for benchmarks) with ``ultralytics.nn.tasks.DetectionModel``, fuses conv+BN
and runs its forward pass itself, so Ultralytics' predictor (and with it torchvision,
which does not import beside the CPU build of torch) is never used. The frame path
(letterbox, output check, decode, NMS) is the shared `yolo.YoloEngine`'s, so boxes match
the other backends.

On a GPU (``EngineOptions.gpu`` set and ``torch.cuda`` sees it): fp16 weights (fp32 when
asked), channels-last memory format, a pinned host batch buffer the letterbox writes
into and one asynchronous copy to the device per batch on the engine's own CUDA stream,
and CUDA graphs captured once per batch-size bucket (1, 2, 4, ... max_batch: a batch is
padded up to its bucket) so a forward pass is a single graph replay. Without a usable
GPU it runs on the CPU in fp32 (with a warning when a GPU was asked for), with
``EngineOptions.intra_op_threads`` threads (torch's thread count is per process).

torch and ultralytics are optional (extra ``torch``): this module imports them only when
an engine is made, and must never import them at module import time, never use
Ultralytics' predictor, and never download weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from itsd.engines.base import COCO_NAMES, EngineOptions
from itsd.engines.yolo import YoloEngine, check_yolo_output
from itsd.errors import ModelError

log = logging.getLogger(__name__)

#: Most frames one forward pass takes (dynamic batch).
DEFAULT_MAX_BATCH = 32
DEFAULT_IMGSZ = 640


def graph_buckets(max_batch: int) -> list[int]:
    """Batch sizes CUDA graphs are captured for: powers of two up to max_batch, and it."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def bucket_for(n: int, buckets: list[int]) -> int:
    """The smallest bucket that holds n frames."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"{n} frames exceed the largest bucket {buckets[-1]}")


def _imports() -> tuple[Any, Any]:
    """(torch, ultralytics.nn.tasks), or ModelError saying how to install them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no network look-ups on import
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import torch
        from ultralytics.nn import tasks
    except ImportError as exc:
        raise ModelError(
            f"the torch backend needs torch and ultralytics ({exc}); install the extra "
            "itsd[torch] (the CPU build of torch first on machines without a GPU)"
        ) from exc
    return torch, tasks


def load_detection_model(model: str | Path, seed: int = 0) -> tuple[Any, int | None]:
    """(Ultralytics DetectionModel, its training image size or None) from a ``.pt``
    checkpoint or a model yaml (seeded random weights). Raises ModelError saying why not."""
    torch, tasks = _imports()
    where = f"PyTorch model {model}"
    spec = str(model)
    train_imgsz: Any = None
    if spec.endswith((".yaml", ".yml")):
        torch.manual_seed(seed)
        try:
            net = tasks.DetectionModel(spec, verbose=False)
        except Exception as exc:
            raise ModelError(f"cannot build {where}: {exc}") from exc
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{where} does not exist (or is not a file)")
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"cannot load {where}: {exc}") from exc
        net = None
        if isinstance(ckpt, dict):
            net = ckpt.get("ema") or ckpt.get("model")
            train = ckpt.get("train_args") or {}
            train_imgsz = train.get("imgsz") if isinstance(train, dict) else None
        else:
            net = ckpt
        if net is None or not hasattr(net, "forward"):
            raise ModelError(f"{where} holds no model (expected an Ultralytics checkpoint)")
    if not isinstance(net, tasks.DetectionModel):
        raise ModelError(f"{where} is a {type(net).__name__}, not a YOLO detection model")
    return net, train_imgsz if isinstance(train_imgsz, int) else None


def _names(raw: Any, nc: int) -> list[str]:
    if isinstance(raw, dict) and sorted(raw) == list(range(len(raw))):
        names = [str(raw[i]) for i in range(len(raw))]
    elif isinstance(raw, list | tuple):
        names = [str(v) for v in raw]
    else:
        names = []
    if len(names) == nc:
        return names
    return list(COCO_NAMES) if nc == len(COCO_NAMES) else [f"class_{i}" for i in range(nc)]


class TorchEngine(YoloEngine):
    """YOLO detection with PyTorch; implements `itsd.engines.base.Engine`.

    model: a ``.pt`` checkpoint or an Ultralytics model yaml (name or path).
    imgsz: model input side (default: the checkpoint's training size, else 640).
    cuda_graphs: capture CUDA graphs per batch bucket (GPU only).
    """

    name = "torch"

    def __init__(
        self,
        model: str | Path,
        options: EngineOptions,
        *,
        imgsz: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        cuda_graphs: bool = True,
        seed: int = 0,
    ) -> None:
        torch, _ = _imports()
        self._torch = torch
        self.options = options
        self.model_path = Path(model)
        where = f"PyTorch model {model}"
        net, train_imgsz = load_detection_model(model, seed=seed)
        net = net.float().eval()
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False) if _accepts_verbose(net.fuse) else net.fuse()
        for p in net.parameters():
            p.requires_grad_(False)
        side = int(imgsz or train_imgsz or DEFAULT_IMGSZ)
        stride = int(max(getattr(net, "stride", torch.tensor([32])).tolist()))
        if side % stride:
            raise ModelError(f"{where}: input size {side} is not a multiple of stride {stride}")
        self.input_size = (side, side)
        self.max_batch = max_batch
        self.static_batch = None

        self.device = torch.device("cpu")
        self.half = False
        if options.gpu is not None:
            if torch.cuda.is_available() and options.gpu < torch.cuda.device_count():
                self.device = torch.device(f"cuda:{options.gpu}")
                self.half = options.precision != "fp32"
                if options.precision == "int8":
                    log.warning("%s: int8 is TensorRT's; running fp16 with PyTorch", where)
            else:
                log.warning(
                    "%s: GPU %d was asked for but torch sees no such CUDA device; running on "
                    "the CPU",
                    where,
                    options.gpu,
                )
        self.gpu = self.device.type == "cuda"
        if not self.gpu:
            # One engine per worker process, one worker per core: torch's default of one
            # thread per core makes its threads spin against every other worker's.
            torch.set_num_threads(options.intra_op_threads)
        net = net.to(self.device)
        if self.gpu:
            net = net.half() if self.half else net
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        h, w = self.input_size
        self.precision = "fp16" if self.half else "fp32"
        self.cuda_graphs = bool(cuda_graphs and self.gpu)
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self._buckets = graph_buckets(max_batch)
        if self.gpu:
            self._stream = torch.cuda.Stream(device=self.device)
            self._pinned = torch.empty((max_batch, 3, h, w), dtype=torch.float32).pin_memory()
            self._buffer = self._pinned.numpy()
        else:
            self._buffer = np.empty((1, 3, h, w), dtype=np.float32)
        self._buffer[:] = 114 / 255
        try:
            probe = self._forward(self._buffer[:1])
        except Exception as exc:
            raise ModelError(f"{where} fails to run on a blank input: {exc}") from exc
        nc = check_yolo_output(tuple(probe.shape), self.input_size, where)
        self.class_names = _names(getattr(net, "names", None), nc)
        log.info(
            "torch %s: %s on %s, input %dx%d, %s, %d classes, CUDA graphs %s",
            torch.__version__,
            self.model_path.name,
            self.device,
            h,
            w,
            self.precision,
            nc,
            "on" if self.cuda_graphs else "off",
        )

    # -- forward ------------------------------------------------------------------------
    def _run_net(self, x: Any) -> Any:
        out = self._net(x)
        return out[0] if isinstance(out, list | tuple) else out

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        n = int(batch.shape[0])
        with torch.inference_mode():
            if not self.gpu:
                return np.asarray(self._run_net(torch.from_numpy(batch)).float().numpy())
            host = torch.from_numpy(batch)  # a view of the pinned buffer: DMA, no copy
            with torch.cuda.stream(self._stream):
                if self.cuda_graphs:
                    out = self._replay(host, n)
                else:
                    x = host.to(self.device, non_blocking=True)
                    x = (x.half() if self.half else x).contiguous(memory_format=torch.channels_last)
                    out = self._run_net(x)[:n]
                result = out.float().to("cpu", non_blocking=False)
            self._stream.synchronize()
            return np.asarray(result.numpy())

    def _replay(self, host: Any, n: int) -> Any:
        """Run n frames through the CUDA graph of their bucket (captured the first time)."""
        size = bucket_for(n, self._buckets)
        graph = self._graphs.get(size)
        if graph is None:
            graph = self._capture(size)
        g, static_in, static_out = graph
        static_in[:n].copy_(host[:n], non_blocking=True)
        g.replay()
        return static_out[:n]

    def _capture(self, size: int) -> tuple[Any, Any, Any]:
        torch = self._torch
        h, w = self.input_size
        dtype = torch.float16 if self.half else torch.float32
        static_in = torch.full((size, 3, h, w), 114 / 255, device=self.device, dtype=dtype)
        static_in = static_in.contiguous(memory_format=torch.channels_last)
        for _ in range(3):  # warm-up on the side stream, as CUDA graph capture requires
            self._run_net(static_in)
        torch.cuda.current_stream(self.device).synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=self._stream):
            static_out = self._run_net(static_in)
        self._graphs[size] = (g, static_in, static_out)
        log.info("CUDA graph captured for batch %d", size)
        return self._graphs[size]

    def _batch_buffer(self, n: int) -> np.ndarray:
        if self.gpu:
            return self._buffer[:n]  # pinned; n never exceeds max_batch
        return super()._batch_buffer(n)

    def _close(self) -> None:
        self._graphs.clear()
        self._net = None
        if self.gpu:
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchEngine({str(self.model_path)!r}, input={self.input_size}, {self.device})"


def _accepts_verbose(fn: Any) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def load(model: Path, options: EngineOptions) -> TorchEngine:
    """The registry's entry point: a TorchEngine for a ``.pt`` file."""
    return TorchEngine(model, options)
