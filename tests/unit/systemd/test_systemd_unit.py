"""The systemd unit: verified by systemd-analyze, and carrying the settings the design needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "itsd.service"


def _service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def test_unit_has_the_required_settings() -> None:
    svc = _service_section()
    assert svc["Type"] == "notify"
    assert svc["KillMode"] == "mixed"
    assert svc["Restart"] == "on-failure"
    assert "WatchdogSec" in svc
    assert svc["User"] == "itsd"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert svc[key] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert "--config /etc/itsd/itsd.yaml" in svc["ExecStart"]
    assert "78" in svc["RestartPreventExitStatus"]
    # GPU device nodes must stay reachable: no PrivateDevices, no DevicePolicy=closed.
    assert svc.get("PrivateDevices", "no") == "no"
    assert "DevicePolicy" not in svc


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # Point ExecStart at this environment's itsd so verify can check the binary exists.
    itsd_bin = Path(sys.executable).with_name("itsd")
    unit = tmp_path / "itsd.service"
    unit.write_text(UNIT.read_text().replace("/opt/itsd/venv/bin/itsd", str(itsd_bin)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
