"""Unit tests of model resolution, the manifest and backend selection (no real model needed)."""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from itsd.engines import model_source, registry
from itsd.engines.base import EngineOptions
from itsd.engines.manifest import load_manifest
from itsd.engines.model_source import default_model_dir, file_sha256, resolve_model
from itsd.engines.registry import create_engine
from itsd.errors import EXIT_CONFIG, ModelError

REPO = Path(__file__).resolve().parents[3]
TEST_MODEL_SHA = "5ea9b19c6c4d89041175fd2d4f9d2e1581d16f37b817021d547278fc5e2f2b58"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics 'installed' but the machine offline."""
    monkeypatch.setattr(model_source, "package_available", lambda name: True)
    monkeypatch.setattr(model_source, "is_online", lambda: False)


# --- paths -------------------------------------------------------------------------------


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "yolo11n.onnx"
    with pytest.raises(ModelError, match="does not exist") as info:
        resolve_model(str(missing))
    assert str(missing) in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG


def test_existing_path_is_returned_and_bad_suffix_refused(tmp_path: Path) -> None:
    model = tmp_path / "custom.onnx"
    model.write_bytes(b"x")
    assert resolve_model(str(model)) == model
    other = tmp_path / "custom.tflite"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unsupported format '\.tflite'"):
        resolve_model(str(other))


def test_empty_spec_is_refused() -> None:
    with pytest.raises(ModelError, match="no model given"):
        resolve_model("  ")


# --- names -------------------------------------------------------------------------------


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model name 'yolo99z'") as info:
        resolve_model("yolo99z", cache_dir=tmp_path)
    assert "yolo11n" in str(info.value) and "yolov8x" in str(info.value)


def test_name_with_unsupported_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unsupported model format"):
        resolve_model("yolo11n.tflite", cache_dir=tmp_path)


def test_offline_name_without_cache_says_how_to_supply_a_file(
    tmp_path: Path, offline: None
) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model("yolo11n", cache_dir=tmp_path)
    message = str(info.value)
    assert "offline" in message
    assert "--model /path/to/yolo11n.onnx" in message
    assert "yolo export model=yolo11n.pt format=onnx" in message
    assert str(tmp_path) in message


def test_offline_pt_name_points_at_the_asset_url(tmp_path: Path, offline: None) -> None:
    with pytest.raises(ModelError, match=r"releases/download/v8\.3\.0/yolo11s\.pt"):
        resolve_model("yolo11s.pt", cache_dir=tmp_path)


def test_without_ultralytics_the_reason_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_source, "package_available", lambda name: name != "ultralytics")
    with pytest.raises(ModelError, match="ultralytics is not installed"):
        resolve_model("yolov8n", cache_dir=tmp_path)


def test_downloads_disabled_never_probes_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def probe() -> bool:
        raise AssertionError("the network was probed although downloads are disabled")

    monkeypatch.setattr(model_source, "is_online", probe)
    with pytest.raises(ModelError, match="downloads are disabled"):
        resolve_model("yolo11m", cache_dir=tmp_path, allow_download=False)


def test_cached_name_is_found_and_onnx_preferred(tmp_path: Path, offline: None) -> None:
    (tmp_path / "yolo11n.pt").write_bytes(b"pt")
    assert resolve_model("yolo11n", cache_dir=tmp_path) == tmp_path / "yolo11n.pt"
    assert resolve_model("yolo11n.pt", cache_dir=tmp_path) == tmp_path / "yolo11n.pt"
    (tmp_path / "yolo11n.onnx").write_bytes(b"onnx")
    assert resolve_model("yolo11n", cache_dir=tmp_path) == tmp_path / "yolo11n.onnx"


def test_engine_name_is_never_downloaded(tmp_path: Path, offline: None) -> None:
    with pytest.raises(ModelError, match="built on the GPU that runs them"):
        resolve_model("yolo11n.engine", cache_dir=tmp_path)


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ITSD_MODEL_DIR", str(tmp_path / "m"))
    assert default_model_dir() == tmp_path / "m"
    monkeypatch.delenv("ITSD_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_model_dir() == tmp_path / "xdg" / "itsd" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_model_dir() == Path.home() / ".cache" / "itsd" / "models"


def test_env_cache_dir_is_used_when_none_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline: None
) -> None:
    monkeypatch.setenv("ITSD_MODEL_DIR", str(tmp_path))
    (tmp_path / "yolov8s.onnx").write_bytes(b"onnx")
    assert resolve_model("yolov8s") == tmp_path / "yolov8s.onnx"


# --- files known by hash -----------------------------------------------------------------


def test_known_file_not_in_cache_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=TEST_MODEL_SHA) as info:
        resolve_model("yolo11n_int8_320.onnx", cache_dir=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_known_file_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    (tmp_path / "yolo11n_int8_320.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelError, match="damaged or a different model"):
        resolve_model("yolo11n_int8_320", cache_dir=tmp_path)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    with pytest.raises(ModelError, match=str(tmp_path / "nope")):
        file_sha256(tmp_path / "nope")


# --- download orchestration, with a stand-in for ultralytics ------------------------------


class _FakeUltralytics:
    """Installs fake `ultralytics` modules that record what they were asked to do."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_download: bool = False) -> None:
        self.downloads: list[str] = []
        self.exports: list[dict[str, Any]] = []
        self.offline_env_seen: list[str | None] = []
        fake = self

        def attempt_download_asset(file: str) -> str:
            fake.offline_env_seen.append(os.environ.get("YOLO_OFFLINE"))
            fake.downloads.append(file)
            if fail_download:
                Path(file).write_bytes(b"partial")
                raise ConnectionError("Download failure. Environment may be offline.")
            Path(file).write_bytes(b"weights")
            return file

        class YOLO:
            def __init__(self, path: str) -> None:
                self.path = Path(path)

            def export(self, **kwargs: Any) -> str:
                fake.exports.append(kwargs)
                out = self.path.with_suffix(".onnx")
                out.write_bytes(b"onnx from " + self.path.read_bytes())
                return str(out)

        root = types.ModuleType("ultralytics")
        root.YOLO = YOLO  # type: ignore[attr-defined]
        utils = types.ModuleType("ultralytics.utils")
        downloads = types.ModuleType("ultralytics.utils.downloads")
        downloads.attempt_download_asset = attempt_download_asset  # type: ignore[attr-defined]
        for name, module in (
            ("ultralytics", root),
            ("ultralytics.utils", utils),
            ("ultralytics.utils.downloads", downloads),
        ):
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(model_source, "package_available", lambda name: True)
        monkeypatch.setattr(model_source, "is_online", lambda: True)
        monkeypatch.setenv("YOLO_OFFLINE", "1")


def test_download_and_export_land_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeUltralytics(monkeypatch)
    path = resolve_model("yolo11n", cache_dir=tmp_path)
    assert path == tmp_path / "yolo11n.onnx"
    assert path.read_bytes() == b"onnx from weights"
    assert (tmp_path / "yolo11n.pt").read_bytes() == b"weights"
    assert fake.offline_env_seen == [None]  # YOLO_OFFLINE unset while downloading
    assert os.environ["YOLO_OFFLINE"] == "1"  # and restored afterwards
    assert fake.exports == [
        {"format": "onnx", "imgsz": [640, 640], "dynamic": True, "simplify": True}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "yolo11n.onnx", "yolo11n.pt"]
    # Second time: from the cache, no download.
    assert resolve_model("yolo11n", cache_dir=tmp_path) == path
    assert len(fake.downloads) == 1


def test_pt_name_is_downloaded_without_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeUltralytics(monkeypatch)
    assert resolve_model("yolov8m.pt", cache_dir=tmp_path) == tmp_path / "yolov8m.pt"
    assert fake.exports == []


def test_failed_download_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _FakeUltralytics(monkeypatch, fail_download=True)
    with pytest.raises(
        ModelError, match=r"downloading yolo11n\.pt with ultralytics failed"
    ) as info:
        resolve_model("yolo11n", cache_dir=tmp_path)
    assert "--model /path/to/yolo11n.onnx" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_export_needs_onnx_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeUltralytics(monkeypatch)
    monkeypatch.setattr(model_source, "package_available", lambda name: name == "ultralytics")
    with pytest.raises(ModelError, match="needs the package\\(s\\) onnx, onnxslim"):
        resolve_model("yolo11n.onnx", cache_dir=tmp_path)


# --- backends ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for suffix in (".onnx", ".pt", ".engine", ".bin"):
        made[suffix] = tmp_path / f"model{suffix}"
        made[suffix].write_bytes(b"x")
    return made


def test_create_engine_unknown_backend(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="unknown inference backend 'openvino'") as info:
        create_engine(files[".onnx"], "openvino", EngineOptions())
    assert "onnxruntime" in str(info.value)


def test_create_engine_missing_file_and_unknown_suffix(
    files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        create_engine(tmp_path / "gone.onnx", "auto", EngineOptions())
    with pytest.raises(ModelError, match="cannot pick a backend"):
        create_engine(files[".bin"], "auto", EngineOptions())


def test_create_engine_backend_and_suffix_must_agree(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"itsd models export model\.pt --format onnx"):
        create_engine(files[".pt"], "onnxruntime", EngineOptions())
    with pytest.raises(ModelError, match=r"backend tensorrt loads \.engine files"):
        create_engine(files[".onnx"], "tensorrt", EngineOptions())


@pytest.mark.parametrize(
    ("suffix", "backend", "packages"),
    [(".pt", "torch", "torch, ultralytics"), (".engine", "tensorrt", "tensorrt, cuda")],
)
def test_create_engine_optional_backends_say_why_they_are_unavailable(
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    backend: str,
    packages: str,
) -> None:
    monkeypatch.setattr(registry, "package_available", lambda name: False)
    with pytest.raises(ModelError, match=f"backend {backend} is unavailable.*{packages}"):
        create_engine(files[suffix], "auto", EngineOptions())
    assert registry.available_backends()[backend] == f"missing {packages}"


def test_create_engine_onnx_garbage_is_a_model_error(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        create_engine(files[".onnx"], "auto", EngineOptions())


# --- manifest ----------------------------------------------------------------------------


def test_repository_manifest_is_the_packaged_one() -> None:
    packaged = REPO / "itsd" / "engines" / "manifest.yaml"
    documented = REPO / "models" / "manifest.yaml"
    assert documented.read_bytes() == packaged.read_bytes(), (
        "models/manifest.yaml must be a copy of itsd/engines/manifest.yaml (the one the code "
        "reads): copy it over after editing"
    )


def test_manifest_content() -> None:
    manifest = load_manifest()
    for family in ("yolo11", "yolov8"):
        for size in "nsmlx":
            entry = manifest.models[f"{family}{size}"]
            assert entry.source.asset == f"{family}{size}.pt"
            assert entry.input_size == (640, 640)
    test_file = manifest.files["yolo11n_int8_320.onnx"]
    assert test_file.sha256 == TEST_MODEL_SHA
    assert test_file.input_size == (320, 320) and test_file.batch == 1
    assert manifest.class_sets["coco80"].count == 80


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nmodels: {}\nsurprise: 1\n", "surprise"),
        ("version: 1\nmodels: [\n", "not valid YAML"),
        (
            "version: 1\nmodels:\n  m:\n    family: f\n    task: detect\n    classes: nope\n"
            "    input_size: [1, 1]\n    source: {asset: a, url: u}\n    licence: l\n",
            "unknown class set 'nope'",
        ),
    ],
)
def test_invalid_manifest_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ModelError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
