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
    ``submit`` and ``settle`` split ``write`` in two for sinks that wait (one batch
    pending at a time); by default ``submit`` writes and ``settle`` has nothing to do.
    """

    #: Short name for logs and the ``sink`` label of metrics.
    name: str = "sink"

    @abstractmethod
    def write(self, batch: Sequence[EventRecord]) -> None:
        """Accept ``batch`` (in order) or raise."""

    def submit(self, batch: Sequence[EventRecord]) -> None:
        """Start accepting ``batch``; ``settle`` says when it is accepted. A sink that
        waits on something slow (a broker's acknowledgements) returns early here so
        its caller can prepare the next batch meanwhile; the default writes it.
        Raises as ``write`` does; a submitted batch is settled before the next one."""
        self.write(batch)

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the submitted batch: True once it is accepted
        (or when none is pending), False if not yet; raises if it cannot be (then the
        batch is submitted again later)."""
        return True

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
