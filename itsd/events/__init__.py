"""Events: one builder per event type, their JSON Schemas and the rules for changing them.

Every event the daemon publishes is built here (``itsd.events.builders``), never as a
hand-written dictionary in a stage, and each type has a JSON Schema in
``itsd/events/schemas/<event_type>.json`` that tests check real events against.

Envelope (every type)::

    {"event_type": "...", "schema_version": "1.0", "timestamp": "RFC 3339, UTC",
     "camera_id": "...", "frame_id": 0, "node": "...", "data": {...}}

``node`` (since 1.2) names the itsd node that produced the event (``fleet.node_id`` or
the host name); it is left out when the producer has no node name (events built
outside a daemon).

``camera_id`` is also the Kafka message key (the events of one camera stay in order in
one partition); daemon-wide events (metrics snapshots, spool alerts) have ``""``.

Versioning (``SCHEMA_VERSION``, also sent as the Kafka header ``schema_version``):

* ``MAJOR.MINOR``. Consumers must accept any ``1.x`` and ignore keys they do not know.
* A compatible change bumps MINOR: a new optional key, a new ``event_type``, a new enum
  value of ``alert_type`` or ``severity`` (consumers treat unknown ones as unspecified),
  a looser bound. The schema files keep ``additionalProperties`` open so that old
  schemas accept new events.
* Anything else bumps MAJOR and goes to new topics (``<topic>.v2``) while the old ones
  are still fed for a deprecation period: removing or renaming a key, changing a key's
  type, unit or meaning, making an optional key required, narrowing a bound.
* ``tests/unit/events`` holds sample events of every released version; each new schema
  must still accept them (the check that a change was compatible).

This package must never import a stage, the supervisor, ``control``, ``monitor`` or a GPU
library; it is pure data shared by the stages and the tests.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from itsd.events.builders import (
    SCHEMA_VERSION,
    alert_event,
    analytics_summary_event,
    detection_event,
    detection_item,
    line_crossing_event,
    metrics_snapshot_event,
)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
EVENT_TYPES = ("detection", "line_crossing", "analytics_summary", "metrics_snapshot", "alert")


@cache
def load_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type (KeyError for an unknown type)."""
    if event_type not in EVENT_TYPES:
        raise KeyError(event_type)
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())
    return schema


__all__ = [
    "EVENT_TYPES",
    "SCHEMA_DIR",
    "SCHEMA_VERSION",
    "alert_event",
    "analytics_summary_event",
    "detection_event",
    "detection_item",
    "line_crossing_event",
    "load_schema",
    "metrics_snapshot_event",
]
