"""``itsd calibrate`` and ``itsd config check`` on the dusk clip's real calibration."""

from __future__ import annotations

from pathlib import Path

import cv2
import yaml
from click.testing import CliRunner

from itsd.cli import main

REPO = Path(__file__).resolve().parents[3]
CALIBRATED = REPO / "tests" / "data" / "analytics" / "street_overhead_dusk.calibration.yaml"


def config_file(tmp_path: Path, source: str, **calibration: object) -> Path:
    data = yaml.safe_load(CALIBRATED.read_text())
    cam = data["cameras"][0]
    cam["source"] = source
    cam["calibration"].update(calibration)
    data["model"] = {}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_calibrate_draws_on_a_frame_of_the_clip(tmp_path: Path, media_dir: Path) -> None:
    cfg = config_file(tmp_path, str(media_dir / "street_overhead_dusk.mp4"))
    out = tmp_path / "cal.png"
    res = CliRunner().invoke(main, ["calibrate", "dusk", "--config", str(cfg), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "reprojection error rms 0.04 m" in res.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (360, 640, 3)
    assert "blank canvas" not in res.output


def test_calibrate_without_a_readable_source_uses_a_canvas(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, str(tmp_path / "missing.mp4"))
    out = tmp_path / "cal.png"
    res = CliRunner().invoke(main, ["calibrate", "--config", str(cfg), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "blank canvas" in res.output and out.is_file()


def test_config_check_reports_the_reprojection_error(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "x.mp4")
    res = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "camera dusk: calibration of 8 points, reprojection error rms 0.04 m" in res.output


def test_config_check_refuses_mirrored_points_naming_the_camera(tmp_path: Path) -> None:
    data = yaml.safe_load(CALIBRATED.read_text())
    world = data["cameras"][0]["calibration"]["world_points"]
    mirrored = [[-x, y] for x, y in world]
    cfg = config_file(tmp_path, "x.mp4", world_points=mirrored)
    res = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert res.exit_code != 0
    assert "camera 'dusk': calibration: the world points are a mirror image" in res.output
