"""The demo: the pipeline on one real clip with the embedded defaults, no broker.

``itsd demo [SOURCE]`` loads the packaged demo configuration (``itsd/demo.yaml``, the
same file as ``config/demo.yaml``), points its camera at SOURCE (default: the
``sample:bikes`` street clip) and writes events to a JSONL file; at the end it prints a
summary of what was seen. This module must never start processes itself; it only builds
the configuration and reads the results.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import yaml

from itsd.config import Config, apply_overrides, parse_config
from itsd.samples import resolve_source

DEMO_CONFIG = "demo.yaml"


def load_demo_config() -> Config:
    """The packaged demo configuration."""
    text = resources.files("itsd").joinpath(DEMO_CONFIG).read_text(encoding="utf-8")
    return parse_config(yaml.safe_load(text), f"itsd/{DEMO_CONFIG}")


def build_demo_config(
    source: str | None,
    model: str | None,
    output: Path,
    loop: bool,
    monitoring_port: int,
    grpc_port: int = 50051,
) -> Config:
    """Demo configuration with the command line's choices applied."""
    config = load_demo_config()
    camera = config.cameras[0].model_copy(
        update={"source": source or config.cameras[0].source, "loop": loop}
    )
    resolve_source(camera.source)  # fail now, with the install hint, if a sample is missing
    model_spec = model or os.environ.get("ITSD_MODEL") or config.model.path
    config = apply_overrides(
        config,
        {
            "model.path": model_spec,
            "outputs.jsonl_path": str(output),
            "server.monitoring_port": monitoring_port,
            "server.grpc_port": grpc_port,
            "supervisor.exit_when_sources_end": not loop,
            # A demo never picks up (or leaves) cameras registered on a real daemon.
            "state_dir": os.path.join(tempfile.gettempdir(), f"itsd-demo-{os.getuid()}.state"),
            # Nor does it take the daemon's pid file: a demo runs next to a real daemon
            # (and next to other demos); it is stopped with Ctrl-C, not `itsd stop`.
            "pid_file": os.path.join(tempfile.gettempdir(), f"itsd-demo-{os.getpid()}.pid"),
        },
        "demo options",
    )
    config.cameras = [camera]
    return config


def summarize(path: Path) -> str:
    """A short human summary of a demo's JSONL output."""
    frames = 0
    classes: collections.Counter[str] = collections.Counter()
    crossings: collections.Counter[str] = collections.Counter()
    max_vehicles = 0
    tracks: set[int] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ev = json.loads(line)
            data = ev.get("data", {})
            if ev.get("event_type") == "detection":
                frames += 1
                max_vehicles = max(max_vehicles, int(data.get("vehicle_count", 0)))
                for det in data.get("detections", []):
                    classes[det["class_name"]] += 1
                    if det.get("tracking_id") is not None:
                        tracks.add(int(det["tracking_id"]))
            elif ev.get("event_type") == "line_crossing":
                crossings[f"{data['line_id']} {data['direction']} {data['class_name']}"] += 1
    top = ", ".join(f"{n} {c}" for c, n in classes.most_common(6)) or "nothing"
    lines = [
        f"demo: {frames} frames processed, events in {path}",
        f"  detections: {top}",
        f"  tracks: {len(tracks)}, most vehicles in one frame: {max_vehicles}",
    ]
    if crossings:
        lines.append(
            "  line crossings: " + ", ".join(f"{k}: {n}" for k, n in sorted(crossings.items()))
        )
    else:
        lines.append("  line crossings: none")
    return "\n".join(lines)
