"""Results sink: hands detection events back to the gRPC control API through shared memory.

Frames that clients push over gRPC (``push://`` cameras, ``ProcessFrame``) come back as
detection events, and ``StreamFrames`` streams any camera's results: the control API
reads both from the results ring, a ``RecordRing`` the supervisor creates and names in
the publisher's spec (``extra["results"]``). This sink copies every detection event
(an ``EventRecord``, packed as it is on the event ring) onto that ring; the control
API's reader matches results to pushed frames by (camera, frame id).

Results are best effort, unlike the other sinks: the ring has one reader in the daemon,
and when it is full (nobody reads, or the reader fell behind) the event is counted in
``dropped`` and skipped. ``write`` never blocks and never raises for a full ring, so it
can never hold a batch back from the JSONL file or Kafka.

This module must never import a stage, the supervisor, ``control`` or ``monitor``, and
never wait for the reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from itsd.records import EventRecord, EventType
from itsd.shm import RecordRing
from itsd.sinks.base import Sink


class ResultsSink(Sink):
    """Copies detection events onto the results ring (full ring: skipped and counted)."""

    name = "results"

    def __init__(self, ring_name: str) -> None:
        self._ring = RecordRing.attach(ring_name)
        #: Detection events put on the ring, and skipped because it was full.
        self.put = 0
        self.dropped = 0

    def write(self, batch: Sequence[EventRecord]) -> None:
        """Put the batch's detection events on the ring; never blocks."""
        ring = self._ring
        for ev in batch:
            if ev.kind is not EventType.DETECTION:
                continue
            if ring.try_put(ev.pack()):
                self.put += 1
            else:
                self.dropped += 1

    def close(self) -> None:
        """Unmap the ring (the supervisor unlinks it)."""
        self._ring.close()

    def describe(self) -> str:
        """For the log and health answers."""
        return "the gRPC results ring"
