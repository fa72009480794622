"""``itsd db upgrade`` and ``itsd report`` against a real SQLite store."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import sqlalchemy as sa
from click.testing import CliRunner, Result

from itsd.cli import main
from itsd.store.db import head_revision, make_engine
from itsd.store.summary import interval_from_event
from itsd.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_events import summary_event  # type: ignore[import-not-found]


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_db_upgrade_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    r = _run("db", "upgrade", "--url", url)
    assert r.exit_code == 0, r.output
    assert f"schema at revision {head_revision()} (was empty)" in r.output
    r = _run("db", "upgrade", "--url", url)
    assert "(already there)" in r.output


def test_db_upgrade_refuses_a_newer_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    _run("db", "upgrade", "--url", url)
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d_future'"))
    engine.dispose()
    r = _run("db", "upgrade", "--url", url)
    assert r.exit_code == 78
    assert "newer itsd" in r.output


def test_report_from_the_store_prints_a_table_and_draws_a_chart(tmp_path: Path) -> None:
    cfg = tmp_path / "itsd.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\n")
    assert _run("db", "upgrade", "--config", str(cfg)).exit_code == 0
    now = time.time() // 60 * 60
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'store.sqlite3'}")
    rows = [
        interval_from_event(
            summary_event(
                "street",
                now - 3600 + 60 * m,
                counts={"mid": {"in": {"car": 2}, "out": {"truck": 1}}},
                speeds=[40.0, 60.0],
                longest_queue_m=15.0 if m == 7 else None,
            )
        )
        for m in range(30)
    ]
    StoreWriter(engine).write([r for r in rows if r is not None])
    engine.dispose()
    png = tmp_path / "chart.png"
    r = _run(
        "report", "--camera", "street", "--since", "2h", "--bucket", "15m",
        "--from-store", "--config", str(cfg), "--png", str(png),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("camera street: ") and "15-minute buckets" in lines[0]
    assert lines[1].split()[:4] == ["start", "(UTC)", "crossings", "mid:in"]
    total = lines[-2].split()
    assert total[:4] == ["total", "90", "60", "30"]
    assert total[4] == "50.0" and total[5] == "60" and total[6] == "15.0"
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (720, 1200, 3)


def test_report_without_a_daemon_says_so(tmp_path: Path) -> None:
    r = _run("report", "--camera", "street", "--target", "127.0.0.1:1", "--timeout", "1")
    assert r.exit_code == 1
    assert "cannot reach itsd at 127.0.0.1:1" in r.output
    assert "--from-store" in r.output


def test_report_refuses_a_bad_duration() -> None:
    r = _run("report", "--camera", "street", "--since", "yesterday")
    assert r.exit_code == 2
    assert "not a duration" in r.output
