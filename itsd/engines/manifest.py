"""Loader of the model manifest: which model names itsd knows, their sources and hashes.

The manifest the code reads is `itsd/engines/manifest.yaml`, shipped inside the package so
an installed daemon has it; `models/manifest.yaml` in the repository is a copy of it for
readers (a unit test keeps the two identical).

This module must never download, hash or load a model: it only reads and validates the
manifest. It imports nothing from itsd but `itsd.errors`.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from itsd.errors import ModelError

_PACKAGED = "manifest.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Frozen):
    """Where a named model comes from."""

    asset: str = Field(description="Ultralytics asset name, e.g. yolo11n.pt")
    url: str = Field(description="Where the asset is published (documentation only)")


class ModelEntry(_Frozen):
    """A model known by name (e.g. yolo11n)."""

    family: str = Field(description="Model family: yolo11 or yolov8")
    task: Literal["detect"] = Field(description="Only detection models are supported")
    classes: str = Field(description="Name of a class set in class_sets")
    input_size: tuple[int, int] = Field(description="(height, width) of the default export")
    source: ModelSource
    licence: str


class FileEntry(_Frozen):
    """A specific model file, known by file name, with its hash."""

    model: str = Field(description="The named model it derives from")
    format: Literal["onnx", "pt", "engine"]
    input_size: tuple[int, int]
    batch: int | None = Field(default=None, description="Static batch size; None if dynamic")
    precision: Literal["fp32", "fp16", "int8"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    note: str = ""


class ClassSet(_Frozen):
    """A set of classes models are trained on."""

    count: int = Field(gt=0)
    description: str = ""
    traffic: tuple[int, ...] = Field(default=(), description="Class ids relevant to traffic")


class Manifest(_Frozen):
    """The whole manifest."""

    version: Literal[1]
    models: dict[str, ModelEntry]
    files: dict[str, FileEntry] = Field(default_factory=dict)
    class_sets: dict[str, ClassSet] = Field(default_factory=dict)

    def known_names(self) -> list[str]:
        """Model names and file names `resolve_model` accepts, sorted."""
        return sorted({*self.models, *self.files})


def _parse(text: str, where: str) -> Manifest:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"model manifest {where} is not valid YAML: {exc}") from exc
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ModelError(f"model manifest {where} is invalid:\n{exc}") from exc
    for name, entry in manifest.models.items():
        if entry.classes not in manifest.class_sets:
            raise ModelError(
                f"model manifest {where}: models.{name}.classes names an unknown class set "
                f"{entry.classes!r} (known: {', '.join(sorted(manifest.class_sets))})"
            )
    for name, file in manifest.files.items():
        if file.model not in manifest.models:
            raise ModelError(
                f"model manifest {where}: files.{name}.model names an unknown model {file.model!r}"
            )
    return manifest


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and validate a manifest; the packaged one when `path` is None (cached).

    Raises ModelError naming the file when it is missing or invalid.
    """
    if path is None:
        return _packaged_manifest()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    return _parse(text, str(path))


@functools.cache
def _packaged_manifest() -> Manifest:
    resource = resources.files("itsd.engines").joinpath(_PACKAGED)
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(
            f"the packaged model manifest itsd/engines/{_PACKAGED} is missing ({exc}); "
            "the itsd installation is incomplete: reinstall it"
        ) from exc
    return _parse(text, f"itsd/engines/{_PACKAGED}")
