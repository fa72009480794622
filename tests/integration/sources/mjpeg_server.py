"""A small HTTP MJPEG camera for tests: JPEGs of a clip's frames as multipart/x-mixed-replace.

    python mjpeg_server.py --file clip.mp4 --port P [--path /video] [--fps 25]
        [--frames 120] [--user U --password W] [--mode ok|garbage|turns-garbage|stall]

It binds to 127.0.0.1 only, prints ``READY http://127.0.0.1:PORT/PATH`` once it
listens, and runs until killed. ``--mode garbage`` answers with the multipart header and
then random bytes; ``--mode turns-garbage`` sends 10 frames, then random bytes; ``--mode
stall`` sends 10 frames and then nothing (the connection stays open). Other paths get
404; with ``--user`` a request without the right Basic credentials gets 401.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2

BOUNDARY = "itsdframe"


def load_jpegs(path: Path, limit: int) -> list[bytes]:
    out: list[bytes] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            ok, buf = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"))
            assert ok
            out.append(buf.tobytes())
            if len(out) >= limit:
                break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/video")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    ap.add_argument("--mode", choices=("ok", "garbage", "stall", "turns-garbage"), default="ok")
    args = ap.parse_args()
    jpegs = load_jpegs(args.file, args.frames)
    expected = None
    if args.user:
        expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != args.path:
                self.send_error(404)
                return
            if expected and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            period = 1.0 / args.fps
            i = 0
            try:
                while True:
                    if args.mode == "garbage" or (args.mode == "turns-garbage" and i >= 10):
                        self.wfile.write(os.urandom(4096))
                    elif args.mode == "stall" and i >= 10:
                        time.sleep(3600)
                    else:
                        jpg = jpegs[i % len(jpegs)]
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                            + jpg
                            + b"\r\n"
                        )
                    self.wfile.flush()
                    i += 1
                    time.sleep(period)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"READY http://127.0.0.1:{args.port}{args.path}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
