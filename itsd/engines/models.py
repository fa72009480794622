"""Model preparation: import model files into the cache, list them, export them.

* `import_model` copies a ``.onnx``/``.pt``/``.engine`` file into the model cache
  (atomically, under the cache lock), hashes it and records where it came from.
* `list_models` describes every model file of the cache: format, input size, batch,
  classes, precision, sha256 and origin (imported from a path, exported from another
  model, downloaded). What a file says about itself is read from the file (ONNX
  metadata, the checkpoint, the engine's bindings) and kept in the cache's index
  (``models.json``) by sha256, so a listing does not reload every model.
* `export_model` turns a PyTorch checkpoint (``.pt``, an Ultralytics model: the
  network is Ultralytics' ``DetectionModel``, traced by ``torch.onnx``) into ONNX
  (fp32; fp16 converted with ONNX Runtime's float16 tool; int8 by ONNX Runtime's dynamic
  quantizer), or an ONNX file into a TensorRT engine with the TensorRT API (fp32, fp16,
  or int8 calibrated on frames of a video or a folder of images). Engines are named by
  `tensorrt_backend.engine_cache_key` (model hash, GPU, TensorRT version, precision,
  batch, size): a change in any of them builds a new one. Long steps report progress
  through a callback.

This module must never download anything, never leave a half-written file in the cache,
and never import torch, ultralytics or tensorrt at import time.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsd.engines.model_source import (
    MODEL_SUFFIXES,
    _cache_lock,
    default_model_dir,
    file_sha256,
    resolve_model,
)
from itsd.errors import ModelError

log = logging.getLogger(__name__)

INDEX = "models.json"
FORMATS = ("onnx", "engine")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ModelInfo:
    """One model file of the cache, as `itsd models list` shows it."""

    file: str
    format: str
    input_size: tuple[int, int] | None
    batch: int | None  # None: dynamic
    classes: int | None
    precision: str | None
    sha256: str
    origin: str
    note: str = ""


# -- the index --------------------------------------------------------------------------
def _read_index(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((cache / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("model index %s is unreadable (%s); rebuilding it", cache / INDEX, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(cache: Path, index: dict[str, dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".index-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1, sort_keys=True)
    os.replace(tmp, cache / INDEX)


def _record(cache: Path, path: Path, origin: str) -> ModelInfo:
    """Inspect a cache file and record it with its origin in the index (lock held)."""
    info = inspect_model(path, origin)
    index = _read_index(cache)
    index[path.name] = asdict(info)
    _write_index(cache, index)
    return info


# -- inspection ---------------------------------------------------------------------------
def inspect_model(path: Path, origin: str = "") -> ModelInfo:
    """What a model file says about itself. Raises ModelError for an unreadable file."""
    fmt = path.suffix.lstrip(".")
    if path.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: not a model file ({', '.join(MODEL_SUFFIXES)})")
    sha = file_sha256(path)
    base: dict[str, Any] = {"file": path.name, "format": fmt, "sha256": sha, "origin": origin}
    if fmt == "onnx":
        return ModelInfo(**base, **_inspect_onnx(path))
    if fmt == "pt":
        return ModelInfo(**base, **_inspect_pt(path))
    return ModelInfo(
        **base,
        input_size=None,
        batch=None,
        classes=None,
        precision=None,
        note="TensorRT engine: details need TensorRT on the GPU it was built for",
    )


def _inspect_onnx(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    dims = list(inp.shape)
    h, w = (dims[2], dims[3]) if len(dims) == 4 else (None, None)
    size = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    rows = out.shape[1] if len(out.shape) == 3 else None
    if inp.type == "tensor(float16)":
        precision = "fp16"
    elif meta.get("onnx.infer") == "onnxruntime.quant" or meta.get("precision") == "int8":
        precision = "int8"
    else:
        precision = "fp32"
    classes = rows - 4 if isinstance(rows, int) else None
    if classes is None and meta.get("names"):
        try:
            classes = len(ast.literal_eval(meta["names"]))
        except (ValueError, SyntaxError, TypeError):
            classes = None
    return {
        "input_size": size,
        "batch": dims[0] if isinstance(dims[0], int) else None,
        "classes": classes,
        "precision": precision,
    }


def _inspect_pt(path: Path) -> dict[str, Any]:
    try:
        from itsd.engines.torch_backend import load_detection_model

        net, imgsz = load_detection_model(path)
    except ModelError as exc:
        return {
            "input_size": None,
            "batch": None,
            "classes": None,
            "precision": None,
            "note": str(exc)[:200],
        }
    names = getattr(net, "names", None)
    nc = len(names) if isinstance(names, dict | list) else getattr(net, "nc", None)
    side = imgsz or 640
    return {"input_size": (side, side), "batch": None, "classes": nc, "precision": "fp32"}


# -- import and list ----------------------------------------------------------------------
def import_model(
    src: Path, cache: Path | None = None, name: str | None = None, progress: Progress = _quiet
) -> ModelInfo:
    """Copy a model file into the cache (never overwriting a different file of that name)."""
    cache = cache or default_model_dir()
    src = Path(src).expanduser()
    if not src.is_file():
        raise ModelError(f"cannot import {src}: no such file")
    if src.suffix not in MODEL_SUFFIXES:
        raise ModelError(
            f"cannot import {src}: unsupported format {src.suffix!r} "
            f"(expected one of {', '.join(MODEL_SUFFIXES)})"
        )
    target_name = name or src.name
    if Path(target_name).suffix != src.suffix or "/" in target_name:
        raise ModelError(f"name {target_name!r} must be a file name ending in {src.suffix}")
    with _cache_lock(cache):
        target = cache / target_name
        progress(f"hashing {src}")
        sha = file_sha256(src)
        if target.exists():
            if file_sha256(target) != sha:
                raise ModelError(
                    f"the cache already holds a different {target_name} ({target}); "
                    "import under another name with --name"
                )
            progress(f"{target_name} is already in the cache")
        else:
            progress(f"copying into {cache}")
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=".import-")
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        progress("inspecting")
        return _record(cache, target, f"imported from {src.absolute()}")


def list_models(cache: Path | None = None) -> list[ModelInfo]:
    """Every model file in the cache, described; the index saves reloading known files."""
    cache = cache or default_model_dir()
    if not cache.is_dir():
        return []
    with _cache_lock(cache):
        index = _read_index(cache)
        out, changed = [], False
        for path in sorted(p for p in cache.iterdir() if p.suffix in MODEL_SUFFIXES):
            known = index.get(path.name)
            sha = file_sha256(path)
            if known is not None and known.get("sha256") == sha:
                known = {**known}
                for key in ("input_size",):
                    if known.get(key) is not None:
                        known[key] = tuple(known[key])
                out.append(ModelInfo(**known))
                continue
            origin = "found in the cache"
            try:
                info = inspect_model(path, origin)
            except ModelError as exc:
                info = ModelInfo(path.name, path.suffix[1:], None, None, None, None, sha, origin,
                                 str(exc)[:200])  # fmt: skip
            index[path.name] = asdict(info)
            changed = True
            out.append(info)
        if changed:
            _write_index(cache, index)
    return out


# -- export -------------------------------------------------------------------------------
def export_model(
    spec: str,
    fmt: str,
    precision: str = "fp32",
    imgsz: int = 640,
    batch: int = 0,
    cache: Path | None = None,
    calibration: Path | None = None,
    progress: Progress = _quiet,
) -> ModelInfo:
    """Export model `spec` (a cache name or a path) to `fmt` ("onnx" or "engine") in the cache.

    batch: a static batch size, or 0 for a dynamic batch (engines: 1..max with an
    optimisation profile; give the max as batch for engines, 0 means 32).
    """
    cache = cache or default_model_dir()
    if fmt not in FORMATS:
        raise ModelError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in ("fp32", "fp16", "int8"):
        raise ModelError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if imgsz < 32 or imgsz % 32:
        raise ModelError(
            f"--imgsz must be a multiple of 32 (the head's largest stride), got {imgsz}"
        )
    if batch < 0:
        raise ModelError(f"--batch must be >= 0 (0: dynamic), got {batch}")
    source = resolve_model(spec, cache_dir=cache, allow_download=False)
    cache.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        if source.suffix != ".pt":
            raise ModelError(
                f"ONNX export starts from a PyTorch checkpoint (.pt); {source.name} is "
                f"{source.suffix}"
            )
        return _export_onnx(source, cache, precision, imgsz, batch, progress)
    if source.suffix != ".onnx":
        raise ModelError(
            f"TensorRT engines are built from ONNX; export {source.name} with "
            "`itsd models export NAME --format onnx` first"
        )
    return _build_engine(source, cache, precision, imgsz, batch or 32, calibration, progress)


def _export_onnx(
    pt: Path, cache: Path, precision: str, imgsz: int, batch: int, progress: Progress
) -> ModelInfo:
    from itsd.engines.torch_backend import _imports, load_detection_model

    torch, _ = _imports()
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("ONNX export needs the onnx package: pip install itsd[torch]") from exc
    progress(f"loading {pt.name}")
    net, _ = load_detection_model(pt)
    net = net.float().eval()
    head = net.model[-1]
    head.export = True  # the head returns the decoded (B, 4 + classes, anchors) tensor only
    dynamic = batch == 0
    stem = pt.stem + f"_{imgsz}" + ("" if precision == "fp32" else f"_{precision}")
    stem += "" if dynamic else f"_b{batch}"
    target = cache / f"{stem}.onnx"
    with _cache_lock(cache), tempfile.TemporaryDirectory(dir=cache) as tmp:
        raw = Path(tmp) / "raw.onnx"
        progress(f"tracing {pt.name} at {imgsz}x{imgsz}, batch {'dynamic' if dynamic else batch}")
        with torch.inference_mode():
            torch.onnx.export(
                net,
                (torch.zeros(max(batch, 1), 3, imgsz, imgsz),),
                str(raw),
                opset_version=17,
                dynamo=False,
                input_names=["images"],
                output_names=["output0"],
                dynamic_axes=(
                    {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
                ),
            )
        model = onnx.load(str(raw))
        names = getattr(net, "names", None)
        meta = {
            "names": str(dict(names) if isinstance(names, dict) else names),
            "imgsz": str([imgsz, imgsz]),
            "batch": str(batch if batch else "dynamic"),
            "task": "detect",
            "stride": str(int(max(net.stride.tolist()))),
            "precision": precision,
            "source_sha256": file_sha256(pt),
        }
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        out = Path(tmp) / "out.onnx"
        if precision == "fp16":
            progress("converting to fp16")
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(model, keep_io_types=False)
        onnx.save(model, str(out))
        if precision == "int8":
            progress("quantizing to int8 (ONNX Runtime dynamic quantization)")
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(tmp) / "int8.onnx"
            quantize_dynamic(str(out), str(quantized), weight_type=QuantType.QUInt8)
            out = quantized
        os.replace(out, target)
        progress(f"wrote {target}")
        return _record(
            cache, target, f"exported from {pt.name} (onnx, {precision}, {imgsz}, batch "
            f"{batch or 'dynamic'})"
        )  # fmt: skip


def calibration_frames(source: Path, count: int = 64) -> list[np.ndarray]:
    """Up to `count` RGB frames for int8 calibration: a video (evenly spread) or a folder
    of images."""
    import cv2

    if source.is_dir():
        frames = []
        for p in sorted(source.iterdir())[:count]:
            img = cv2.imread(str(p))
            if img is not None:
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if not frames:
            raise ModelError(f"no readable images in calibration folder {source}")
        return frames
    import av

    try:
        with av.open(str(source)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as exc:
        raise ModelError(f"cannot read calibration video {source}: {exc}") from exc
    if not frames:
        raise ModelError(f"calibration video {source} has no frames")
    step = max(1, len(frames) // count)
    return frames[::step][:count]


def _build_engine(
    onnx_path: Path,
    cache: Path,
    precision: str,
    imgsz: int,
    max_batch: int,
    calibration: Path | None,
    progress: Progress,
) -> ModelInfo:
    """Build a TensorRT engine (not run on these machines: TensorRT is not installable)."""
    from itsd.engines import tensorrt_backend as trtb

    trt, cudart = trtb._imports()
    if precision == "int8" and calibration is None:
        raise ModelError("int8 engines need calibration frames: pass --calibration VIDEO|DIR")
    props = trtb._check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    gpu_name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    key = trtb.engine_cache_key(
        file_sha256(onnx_path),
        gpu_name,
        (int(props.major), int(props.minor)),
        trt.__version__,
        precision,
        max_batch,
        imgsz,
    )
    target = cache / key
    if target.is_file():
        progress(f"engine is cached: {target}")
        return _record_locked(cache, target, "cached")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    progress(f"parsing {onnx_path.name}")
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    inp = network.get_input(0)
    profile = builder.create_optimization_profile()
    shape_min, shape_max = (1, 3, imgsz, imgsz), (max_batch, 3, imgsz, imgsz)
    profile.set_shape(inp.name, shape_min, shape_max, shape_max)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        assert calibration is not None
        config.set_flag(trt.BuilderFlag.INT8)
        frames = calibration_frames(calibration)
        progress(f"int8 calibration on {len(frames)} frames of {calibration}")
        config.int8_calibrator = _calibrator(trt, cudart, frames, imgsz, cache / f"{key}.calib")
    progress(f"building the {precision} engine for {gpu_name} (minutes)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build an engine from {onnx_path}")
    with _cache_lock(cache):
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".engine-")
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(serialized))
        os.replace(tmp, target)
    progress(f"wrote {target}")
    return _record_locked(cache, target, f"built from {onnx_path.name} ({precision})")


def _record_locked(cache: Path, path: Path, origin: str) -> ModelInfo:
    with _cache_lock(cache):
        return _record(cache, path, origin)


def _calibrator(
    trt: Any, cudart: Any, frames: list[np.ndarray], imgsz: int, cache_file: Path
) -> Any:
    """An IInt8EntropyCalibrator2 feeding letterboxed frames one batch of 8 at a time."""
    from itsd.engines import tensorrt_backend as trtb
    from itsd.engines.preprocess import letterbox_batch

    batch = 8

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.host = np.empty((batch, 3, imgsz, imgsz), dtype=np.float32)
            self.device = trtb._check(cudart.cudaMalloc(self.host.nbytes), "cudaMalloc")
            self.index = 0

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            chunk = frames[self.index : self.index + batch]
            if len(chunk) < batch:
                return None
            self.index += batch
            letterbox_batch(chunk, self.host)
            trtb._check(
                cudart.cudaMemcpy(
                    self.device,
                    self.host.ctypes.data,
                    self.host.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                ),
                "cudaMemcpy",
            )
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache_file.write_bytes(bytes(data))

    return Calibrator()


# -- the daemon's own preparation (model.tensorrt) -----------------------------------
def prepare_for_gpu(
    model: Path,
    backend: str,
    precision: str,
    gpu: int | None,
    max_batch: int,
    enabled: bool = True,
    cache: Path | None = None,
    progress: Progress = _quiet,
) -> tuple[Path, str]:
    """The model file and backend an inference worker runs: with ``model.tensorrt`` on,
    a GPU given and TensorRT installed, an ONNX model (or a ``.pt``, exported to ONNX
    first) becomes a TensorRT engine built once and cached (`export_model`, keyed by
    model hash, GPU, TensorRT version, precision, batch and size); otherwise the model as
    it is, with ``backend``.

    Never raises for a failed build: the error is logged and the worker runs the file
    it was given with its own backend (the CPU or PyTorch path still works). int8 without
    calibration frames builds fp16 (calibration needs `itsd models export`).
    """
    if (
        not enabled
        or gpu is None
        or backend not in ("auto", "tensorrt")
        or model.suffix not in (".onnx", ".pt")
    ):
        return model, backend
    from itsd.engines.registry import missing_packages

    missing = missing_packages("tensorrt")
    if missing:
        log.info(
            "model.tensorrt: TensorRT is not installed here (missing %s); %s runs with backend %s",
            ", ".join(missing),
            model.name,
            backend,
        )
        return model, backend
    if precision == "int8":
        log.warning(
            "model.tensorrt: an int8 engine needs calibration frames; building fp16 "
            "(for int8: itsd models export %s --format engine --precision int8 "
            "--calibration VIDEO)",
            model.name,
        )
        precision = "fp16"
    folder = cache or default_model_dir()
    try:
        onnx = model
        if model.suffix == ".pt":
            progress(f"exporting {model.name} to ONNX for TensorRT")
            pt = inspect_model(model)
            side = pt.input_size[0] if pt.input_size else 640
            made = export_model(
                str(model), "onnx", "fp32", side, 0, cache=folder, progress=progress
            )
            onnx = folder / made.file
        info = inspect_model(onnx)
        size = info.input_size[0] if info.input_size else 640
        batch = info.batch or max_batch  # a static-batch model keeps its own
        built = export_model(
            str(onnx), "engine", precision, size, batch, cache=folder, progress=progress
        )
    except ModelError as err:
        log.error("model.tensorrt: no engine for %s (%s); running it as it is", model, err)
        return model, backend
    engine = folder / built.file
    log.info("model.tensorrt: %s runs as TensorRT engine %s", model.name, engine.name)
    return engine, "tensorrt"
