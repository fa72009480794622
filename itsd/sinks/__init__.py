"""Output sinks of the publisher: JSONL file, Kafka (with its disk spool).

The publisher fans each batch of events out to every configured sink and takes the batch
off the event ring only when every sink accepted it (``Sink.write`` returned): written,
delivered to the broker, or durably spooled. A sink that raises keeps the batch on the
ring; the publisher retries that sink alone, so the others never see a batch twice.

This package must never import a stage, the supervisor, ``control``, ``monitor`` or a
GPU library.
"""

from __future__ import annotations

from itsd.sinks.base import Sink, SinkError

__all__ = ["Sink", "SinkError"]
