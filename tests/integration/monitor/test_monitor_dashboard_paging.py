"""The dashboard with 64 cameras in headless Chromium: 16 a page, four pages, the pager
moves between them, and 64 cameras below their target are one alert row.

The state is built here (DaemonState of 64 cameras, no pipeline: the 64-camera pipeline
runs in the daemon tests); the server, the event stream and the page are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from monitor_cdp import chromium_or_skip, open_page

from itsd.control.backend import HealthSnapshot, MetricsSnapshot
from itsd.monitor.http import MonitorServer
from itsd.runtime.alerts import ActiveAlert, AlertsView
from itsd.supervisor.state import CameraView, DaemonState


class Backend:
    def health(self) -> HealthSnapshot:
        return HealthSnapshot("serving", "0", 1.0, "onnxruntime", "m.onnx")

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot({"cameras": 64.0})


def sixty_four() -> DaemonState:
    cams = tuple(
        CameraView(
            camera_id=f"cam{i:02d}",
            key=i + 1,
            worker="infer",
            source="pattern://moving",
            target_fps=5.0,
            priority=0,
            origin="file",
            state="running",
            connected=True,
            fps_in=5.0,
            fps_out=2.0,
            frames_decoded=100,
            frames_inferred=40,
            frames_dropped=60,
            reconnects=0,
            last_frame_age_s=0.1,
            line_counts=MappingProxyType({"l1": {"in": {"car": i}, "out": {}}}),
            config=MappingProxyType({"lines": ({"id": "l1", "start": (0.5, 0), "end": (0.5, 1)},)}),
        )
        for i in range(64)
    )
    active = tuple(
        ActiveAlert("ThroughputLow", "warning", c.camera_id, "pending", time.time(), 0.4, 0.9, "x")
        for c in cams
    )
    return DaemonState(status="serving", cameras=cams, alerts=AlertsView(active=active))


async def _pages(url: str, profile: Path, shot: Path) -> dict[str, Any]:
    ids = "[...document.querySelectorAll('.cam .id')].map(e => e.textContent)"
    out: dict[str, Any] = {}
    async with open_page(url, profile) as page:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not await page.js(f"{ids}.length"):
            await asyncio.sleep(0.2)
        out["first"] = await page.js(ids)
        out["buttons"] = await page.js(
            "[...document.querySelectorAll('#pager button')].map(b => b.textContent)"
        )
        out["alert_rows"] = await page.js("document.querySelectorAll('#alerts tbody tr').length")
        out["alert_text"] = await page.js("document.querySelector('#alerts tbody').textContent")
        await page.js("document.querySelectorAll('#pager button')[3].click()")
        await asyncio.sleep(1.5)  # and the next pushed state keeps the page
        out["last"] = await page.js(ids)
        await page.screenshot(shot)
    return out


def test_sixty_four_cameras_page_by_page(tmp_path: Path) -> None:
    chromium_or_skip()
    state = sixty_four()
    srv = MonitorServer(Backend(), "127.0.0.1", 0, state=lambda: state)  # type: ignore[arg-type]
    try:
        shot = tmp_path / "dashboard-64.png"
        got = asyncio.run(_pages(f"http://127.0.0.1:{srv.port}/", tmp_path / "profile", shot))
    finally:
        srv.stop()
    assert got["first"] == [f"cam{i:02d}" for i in range(16)]
    dash = "\u2013"
    assert got["buttons"] == [f"1{dash}16", f"17{dash}32", f"33{dash}48", f"49{dash}64"]
    assert got["last"] == [f"cam{i:02d}" for i in range(48, 64)]
    assert got["alert_rows"] == 1 and "64 subjects" in got["alert_text"]
    assert shot.stat().st_size > 10_000
