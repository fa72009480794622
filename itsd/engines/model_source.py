"""Where a model comes from, and which backend runs it.

`resolve_model` turns what the user wrote (a file path, or a name such as "yolo11n",
"yolo11s.pt", "yolo11n.onnx") into a model file on disk: a path must exist; a name is
looked up in the model cache (`$ITSD_MODEL_DIR`, else `$XDG_CACHE_HOME/itsd/models`, else
~/.cache/itsd/models) and, when allowed and possible, downloaded with Ultralytics and
exported to ONNX. Which backend runs a file is decided in `itsd.engines.registry`.

This module must never import ultralytics, torch or tensorrt at import time (only inside
the optional download/export path), never download without `allow_download`, never
leave a half-written file in the cache, and never hand back an engine for a backend
that is not really there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from itsd.engines.manifest import FileEntry, ModelEntry, load_manifest
from itsd.errors import ModelError

log = logging.getLogger(__name__)

#: Backends `create_engine` knows ("auto" picks one from the file suffix).
BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch", "tensorrt")
#: Model file suffix each backend loads.
BACKEND_SUFFIX: dict[str, str] = {"onnxruntime": ".onnx", "torch": ".pt", "tensorrt": ".engine"}
MODEL_SUFFIXES: tuple[str, ...] = tuple(BACKEND_SUFFIX.values())
#: Host and port probed to decide whether the machine is online.
ONLINE_PROBE = ("github.com", 443)
ONLINE_PROBE_TIMEOUT_S = 2.0


def default_model_dir() -> Path:
    """The model cache: $ITSD_MODEL_DIR, else $XDG_CACHE_HOME/itsd/models, else ~/.cache/..."""
    env = os.environ.get("ITSD_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "itsd" / "models"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks. Raises ModelError naming the path if unreadable."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} to hash it: {exc}") from exc


def is_online() -> bool:
    """Whether github.com:443 (where Ultralytics' weights live) answers within 2 s."""
    try:
        with socket.create_connection(ONLINE_PROBE, timeout=ONLINE_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def package_available(name: str) -> bool:
    """Whether a package can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith(("~", "."))


def _split_name(spec: str) -> tuple[str, str | None]:
    for suffix in MODEL_SUFFIXES:
        if spec.endswith(suffix):
            return spec[: -len(suffix)], suffix
    return spec, None


def resolve_model(spec: str, *, cache_dir: Path | None = None, allow_download: bool = True) -> Path:
    """The model file that `spec` means; raises ModelError saying how to supply one.

    spec is a path to a .onnx/.pt/.engine file (must exist; a file of that name in the
    working directory counts as a path and wins over the cache), or a name: a model of the
    manifest ("yolo11n", "yolov8s.pt", "yolo11m.onnx") or a file the manifest lists by
    name ("yolo11n_int8_320.onnx", checked against its sha256). A bare model name means
    its ONNX export (.onnx preferred, then .pt, in the cache). A name not in the cache is
    downloaded with ultralytics and exported to ONNX when `allow_download` is set,
    ultralytics is installed and the machine is online.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError("no model given: pass --model with a file path or a name like yolo11n")
    path = Path(spec).expanduser()
    if _looks_like_path(spec) or path.is_file():
        if not path.is_file():
            raise ModelError(
                f"model file {path} does not exist (resolved from {spec!r}); pass the path of "
                f"a {'/'.join(MODEL_SUFFIXES)} file or a model name like yolo11n"
            )
        if path.suffix not in MODEL_SUFFIXES:
            raise ModelError(
                f"model file {path} has an unsupported format {path.suffix!r}; "
                f"expected one of {', '.join(MODEL_SUFFIXES)}"
            )
        return path.absolute()  # stage processes may run from another directory

    cache = cache_dir if cache_dir is not None else default_model_dir()
    manifest = load_manifest()
    stem, suffix = _split_name(spec)
    file_key = spec if suffix else next((f for f in manifest.files if f.startswith(f"{spec}.")), "")
    if file_key in manifest.files:
        return _resolve_known_file(file_key, manifest.files[file_key], cache)
    if suffix and (cache / spec).is_file():  # a file imported or exported into the cache
        return cache / spec
    if stem not in manifest.models:
        if suffix is None and "." in spec:
            detail = f"unsupported model format in {spec!r} (expected {', '.join(MODEL_SUFFIXES)})"
        else:
            detail = f"unknown model name {spec!r}"
        raise ModelError(
            f"{detail}; known names: {', '.join(manifest.known_names())} "
            f"(optionally with .onnx or .pt), or pass the path of a model file"
        )
    entry = manifest.models[stem]
    for candidate in [f"{stem}{suffix}"] if suffix else [f"{stem}.onnx", f"{stem}.pt"]:
        if (cache / candidate).is_file():
            log.info("model %s found in the cache: %s", spec, cache / candidate)
            return cache / candidate

    wanted = suffix or ".onnx"
    if wanted == ".engine":
        raise ModelError(
            f"TensorRT engine {spec} is not in the model cache {cache}: engines are built on "
            f"the GPU that runs them and cannot be downloaded; use {stem}.onnx or {stem}.pt, "
            f"or pass --model /path/to/{spec}"
        )
    reason = ""
    if not allow_download:
        reason = "downloads are disabled"
    elif not package_available("ultralytics"):
        reason = "ultralytics is not installed"
    elif not is_online():
        host, port = ONLINE_PROBE
        reason = f"this machine is offline ({host}:{port} does not answer)"
    if reason:
        raise ModelError(
            f"model {spec!r} is not in the model cache {cache} and cannot be downloaded: "
            f"{reason}. {_manual_steps(stem, wanted, entry, cache)}"
        )
    return _download(stem, wanted, entry, cache)


def _manual_steps(stem: str, suffix: str, entry: ModelEntry, cache: Path) -> str:
    """What a person can do to supply the model by hand."""
    if suffix == ".pt":
        return (
            f"Pass --model /path/to/{stem}.pt, or download {entry.source.url} on an "
            f"online machine and copy it to {cache}/"
        )
    return (
        f"Pass --model /path/to/{stem}.onnx, or on an online machine run "
        f"`pip install ultralytics && yolo export model={entry.source.asset} format=onnx` "
        f"and copy {stem}.onnx to {cache}/"
    )


def _resolve_known_file(name: str, entry: FileEntry, cache: Path) -> Path:
    path = cache / name
    if not path.is_file():
        raise ModelError(
            f"model file {name} is not in the model cache {cache}; it cannot be downloaded. "
            f"Copy it there (sha256 {entry.sha256}) or pass --model /path/to/{name}"
        )
    digest = file_sha256(path)
    if digest != entry.sha256:
        raise ModelError(
            f"model file {path} has sha256 {digest}, but the manifest expects "
            f"{entry.sha256}: the file is damaged or a different model; replace it"
        )
    return path


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Serialise downloads into one cache between processes (flock on cache/.lock)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ultralytics_online() -> Iterator[None]:
    """Unset YOLO_OFFLINE while ultralytics downloads (it reads it at import time)."""
    saved = os.environ.pop("YOLO_OFFLINE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["YOLO_OFFLINE"] = saved


def _download(stem: str, suffix: str, entry: ModelEntry, cache: Path) -> Path:
    """Fetch the .pt asset into the cache (and export it to ONNX when suffix is .onnx)."""
    with _cache_lock(cache):
        target = cache / f"{stem}{suffix}"
        if target.is_file():  # another process fetched it while we waited for the lock
            return target
        how = _manual_steps(stem, suffix, entry, cache)
        pt = cache / entry.source.asset
        if not pt.is_file():
            log.info("downloading %s with ultralytics into %s", entry.source.asset, cache)
            with _ultralytics_online(), tempfile.TemporaryDirectory(dir=cache) as tmp:
                try:
                    downloads = importlib.import_module("ultralytics.utils.downloads")
                    asset = str(Path(tmp) / entry.source.asset)
                    got = Path(downloads.attempt_download_asset(asset))
                except Exception as exc:
                    raise ModelError(
                        f"downloading {entry.source.asset} with ultralytics failed: {exc}. {how}"
                    ) from exc
                if not got.is_file():
                    raise ModelError(f"ultralytics did not download {entry.source.asset}. {how}")
                os.replace(got, pt)
        if suffix == ".pt":
            return pt
        missing = [p for p in ("onnx", "onnxslim") if not package_available(p)]
        if missing:
            raise ModelError(
                f"exporting {pt.name} to ONNX needs the package(s) {', '.join(missing)}: "
                f"`pip install {' '.join(missing)}` and retry"
            )
        log.info("exporting %s to ONNX (dynamic batch, %s)", pt.name, entry.input_size)
        with _ultralytics_online(), tempfile.TemporaryDirectory(dir=cache) as tmp:
            work = Path(tmp) / pt.name
            shutil.copy2(pt, work)
            try:
                yolo = importlib.import_module("ultralytics").YOLO
                exported = Path(
                    yolo(str(work)).export(
                        format="onnx", imgsz=list(entry.input_size), dynamic=True, simplify=True
                    )
                )
            except Exception as exc:
                raise ModelError(f"exporting {pt.name} to ONNX failed: {exc}. {how}") from exc
            if not exported.is_file():
                raise ModelError(f"ultralytics did not export {pt.name} to ONNX. {how}")
            os.replace(exported, target)
        return target
