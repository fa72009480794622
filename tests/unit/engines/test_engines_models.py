"""Model preparation without torch: import into the cache, list, refusals, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from itsd.cli import main
from itsd.engines.models import export_model, import_model, list_models
from itsd.errors import ModelError

SHA = "5ea9b19c6c4d89041175fd2d4f9d2e1581d16f37b817021d547278fc5e2f2b58"


def test_import_then_list(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    steps: list[str] = []
    info = import_model(model_path, cache, progress=steps.append)
    assert (cache / model_path.name).read_bytes() == model_path.read_bytes()
    assert steps[0].startswith("hashing") and "inspecting" in steps
    assert (info.format, info.input_size, info.batch, info.classes, info.precision) == (
        "onnx",
        (320, 320),
        1,
        80,
        "int8",
    )
    assert info.sha256 == SHA and info.origin == f"imported from {model_path.absolute()}"
    # Importing the same file again is harmless; a different file of that name is refused.
    assert import_model(model_path, cache) == info
    other = tmp_path / model_path.name
    other.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="already holds a different"):
        import_model(other, cache)
    # A file dropped into the cache by hand is listed too, with what can be read of it.
    (cache / "broken.onnx").write_bytes(b"junk")
    listed = {i.file: i for i in list_models(cache)}
    assert listed[model_path.name] == info
    assert listed["broken.onnx"].input_size is None and "cannot load" in listed["broken.onnx"].note
    index = json.loads((cache / "models.json").read_text())
    assert index[model_path.name]["origin"].startswith("imported from")


def test_import_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unsupported format '\.bin'"):
        import_model(bad, tmp_path / "c")
    with pytest.raises(ModelError, match="no such file"):
        import_model(tmp_path / "gone.onnx", tmp_path / "c")


def test_export_refusals(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    import_model(model_path, cache)
    with pytest.raises(ModelError, match="multiple of 32"):
        export_model(model_path.name, "onnx", imgsz=300, cache=cache)
    with pytest.raises(ModelError, match=r"starts from a PyTorch checkpoint \(\.pt\)"):
        export_model(model_path.name, "onnx", cache=cache)
    with pytest.raises(ModelError, match="unknown export format"):
        export_model(model_path.name, "tflite", cache=cache)


def test_engine_export_without_tensorrt_says_what_to_install(
    model_path: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    import_model(model_path, cache)
    with pytest.raises(ModelError, match=r"needs tensorrt and cuda-python.*itsd\[gpu\]"):
        export_model(model_path.name, "engine", precision="fp16", cache=cache)


def test_cli_import_list_export(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITSD_MODEL_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    empty = runner.invoke(main, ["models", "list"])
    assert empty.exit_code == 0 and "no model files yet" in empty.output
    done = runner.invoke(main, ["models", "import", str(model_path)])
    assert done.exit_code == 0, done.output
    assert f"{model_path.name}: onnx, sha256 {SHA}" in done.output
    table = runner.invoke(main, ["models", "list"])
    assert table.exit_code == 0
    row = next(line for line in table.output.splitlines() if line.startswith(model_path.name))
    assert row.split()[1:7] == ["onnx", "320x320", "1", "80", "int8", SHA[:12]]
    assert "imported from" in row
    as_json = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    assert as_json[0]["sha256"] == SHA
    failed = runner.invoke(
        main, ["models", "export", model_path.name, "--format", "engine", "--precision", "int8"]
    )
    assert failed.exit_code != 0
    assert "tensorrt" in failed.output
