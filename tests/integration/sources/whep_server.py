"""A small WebRTC WHEP server for tests: sends a clip (aiortc ``MediaPlayer``) to each viewer.

    python whep_server.py --file clip.mp4 --port P [--path /whep] [--token T]

POST ``PATH`` with an SDP offer (``Content-Type: application/sdp``) answers ``201`` with
the SDP answer and ``Location: PATH/<session>``; DELETE on that location ends the session.
Other paths get 404; with ``--token`` a request without ``Authorization: Bearer T`` gets
401. It binds to 127.0.0.1 only (no STUN: host candidates only), prints
``READY http://127.0.0.1:PORT/PATH`` once it listens, and runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/whep")
    ap.add_argument("--token")
    args = ap.parse_args()
    loop = asyncio.new_event_loop()
    sessions: dict[str, tuple[Any, Any]] = {}

    async def answer(offer_sdp: str) -> tuple[str, str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        player = MediaPlayer(str(args.file), loop=True)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(player.video)
        await pc.setLocalDescription(await pc.createAnswer())
        sid = uuid.uuid4().hex
        sessions[sid] = (pc, player)
        return pc.localDescription.sdp, sid

    async def end(sid: str) -> bool:
        entry = sessions.pop(sid, None)
        if entry is None:
            return False
        pc, player = entry
        if player.video is not None:
            player.video.stop()
        await pc.close()
        return True

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            pass

        def _reply(
            self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                self._reply(401, headers={"WWW-Authenticate": "Bearer"})
                return False
            return True

        def do_POST(self) -> None:
            if self.path != args.path:
                self._reply(404)
                return
            if not self._authorised():
                return
            offer = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            fut = asyncio.run_coroutine_threadsafe(answer(offer), loop)
            sdp, sid = fut.result(20)
            self._reply(
                201,
                sdp.encode(),
                {"Content-Type": "application/sdp", "Location": f"{args.path}/{sid}"},
            )

        def do_DELETE(self) -> None:
            sid = self.path.removeprefix(args.path + "/")
            if not self._authorised():
                return
            ok = asyncio.run_coroutine_threadsafe(end(sid), loop).result(10)
            self._reply(200 if ok else 404)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY http://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
