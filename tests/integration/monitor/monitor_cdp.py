"""A small DevTools-protocol driver for headless Chromium (Debian ``chromium``), shared by
the dashboard tests: start the browser, open a page, evaluate JavaScript, screenshot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing in CI (Debian package chromium; make system-deps)")
        pytest.skip("chromium not installed (Debian package chromium)")
    return path


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> Any:
        self.n += 1
        n = self.n
        await self.ws.send_json({"id": n, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == n:
                return msg.get("result", {})

    async def js(self, expr: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return res.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> None:
        png = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(png["data"]))


@asynccontextmanager
async def open_page(url: str, profile: Path, size: str = "1400,1800") -> AsyncIterator[Page]:
    """Headless Chromium showing ``url``, driven over the DevTools protocol."""
    import aiohttp

    proc = subprocess.Popen(
        [
            chromium_or_skip(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ws_url = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not ws_url and loop.time() < deadline:
            line = await loop.run_in_executor(None, proc.stderr.readline)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
        assert ws_url, "chromium did not start its DevTools endpoint"
        host = ws_url.split("/devtools/", maxsplit=1)[0].replace("ws://", "http://")
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{host}/json/new?{url}") as r:
                target = await r.json(content_type=None)
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Runtime.enable")
                yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
