"""The README's configuration table is generated from the config model and kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_readme_config_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "config_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_table_lists_nested_keys() -> None:
    text = (REPO / "README.md").read_text()
    keys = ("`performance.batch_size`", "`cameras[].lines[].start`", "`kafka.topics.alert_events`")
    for key in keys:
        assert key in text, key
