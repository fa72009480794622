"""Parse the JSON events itsd publishes (Kafka topics, JSONL file) into ``itsd.v1.Event``.

The wire format is documented in proto/itsd/v1/events.proto: an envelope (event_type,
timestamp, camera_id, frame_id) plus a ``data`` object whose message type is named by
``event_type``; each ``event_type`` value is the name of a member of the ``data`` oneof
of ``Event``. This module is for typed consumers and for tests that hold the daemon's
events to the schema.

This module must never write or publish events (the publisher writes JSON itself) and
never import a stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from itsd.control._pb import events_pb2

#: The ``event_type`` values this API version knows (the members of Event.data).
EVENT_TYPES: frozenset[str] = frozenset(
    f.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["data"].fields
)


def parse_event(
    event: Mapping[str, Any] | str | bytes, *, ignore_unknown_fields: bool = True
) -> events_pb2.Event:
    """Parse one event (a decoded JSON object, or its JSON text) into an Event message.

    With ``ignore_unknown_fields`` (the default, as consumers should run), JSON keys
    and event types this API version does not know are skipped: an unknown event_type
    gives an Event whose ``data`` is unset. Without it they are errors. Raises
    ValueError naming what is wrong.
    """
    if isinstance(event, str | bytes):
        try:
            doc = json.loads(event)
        except json.JSONDecodeError as exc:
            raise ValueError(f"event is not valid JSON: {exc}") from exc
    else:
        doc = event
    if not isinstance(doc, Mapping):
        raise ValueError(f"event must be a JSON object, got {type(doc).__name__}")
    envelope = dict(doc)
    data = envelope.pop("data", None)
    event_type = envelope.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("event has no event_type")
    if data is not None:
        if event_type in EVENT_TYPES:
            envelope[event_type] = data
        elif not ignore_unknown_fields:
            raise ValueError(
                f"unknown event_type {event_type!r} (known: {', '.join(sorted(EVENT_TYPES))})"
            )
    try:
        return json_format.ParseDict(
            envelope, events_pb2.Event(), ignore_unknown_fields=ignore_unknown_fields
        )
    except json_format.ParseError as exc:
        raise ValueError(f"{event_type} event does not match the schema: {exc}") from exc
