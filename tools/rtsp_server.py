"""A small RTSP server for tests and demos: serves an H.264 MP4 file as a camera would.

    /usr/bin/python3 tools/rtsp_server.py --file clip.mp4 [--port 8554] [--path /stream]
        [--user U --password P] [--mounts N]

It uses GStreamer's RTSP server through Debian's python3-gi (the bindings import only in
Debian's own python3, not in a virtual environment). The file's H.264 is sent as is
(no re-encoding), in real time; each client gets the clip from its start. It binds to
127.0.0.1 only, prints ``READY rtsp://127.0.0.1:PORT/PATH`` once it listens, and runs
until killed. With ``--user`` and ``--password`` a client must log in (RTSP basic
authentication), as most cameras ask. With ``--mounts N`` it serves N cameras at
``/cam0`` ... ``/cam<N-1>`` (each client gets the clip from its start) instead of PATH,
for load tests.

Needs: gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad (``make system-deps`` installs them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/stream")
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--mounts", type=int, default=0, help="serve N mounts /cam0.. (0: PATH)")
    args = ap.parse_args()
    if not args.file.is_file():
        print(f"rtsp_server: no such file: {args.file}", file=sys.stderr)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = str(args.file.resolve()).replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(False)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(args.user, "media.factory.access", True)
        permissions.add_permission_for_role(args.user, "media.factory.construct", True)
        factory.set_permissions(permissions)
    paths = [f"/cam{i}" for i in range(args.mounts)] if args.mounts > 0 else [args.path]
    for path in paths:
        server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"READY rtsp://127.0.0.1:{args.port}{paths[0]}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
