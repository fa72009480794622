"""The sink interface: what the publisher needs from an output.

This module must never import a stage or another sink.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from itsd.records import EventRecord


class SinkError(Exception):
    """A sink could not accept a batch (the publisher keeps it and retries)."""


class Sink(ABC):
    """An output of the publisher.

    ``write`` returns only when the sink has accepted every event of the batch, in order
    (a file written and flushed; events delivered to the broker or durably spooled); it
    raises ``SinkError`` or ``OSError`` otherwise, and the batch is offered again later.
    """

    #: Short name for logs and the ``sink`` label of metrics.
    name: str = "sink"

    @abstractmethod
    def write(self, batch: Sequence[EventRecord]) -> None:
        """Accept ``batch`` (in order) or raise."""

    def poll(self) -> None:  # noqa: B027 - optional hook
        """Background work between batches (replays, periodic fsync); must not block long."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Push what is buffered to stable storage or the broker."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything; nothing accepted may be lost afterwards."""

    def describe(self) -> str:
        """Where the sink writes, for the log and health answers."""
        return self.name
