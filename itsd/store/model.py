"""The store's records: one interval of one camera, as written and read back.

Plain frozen dataclasses, shared by the parser of summary events, the writer, the reader
and the re-bucketing; times are Unix milliseconds (UTC), speeds km/h, lengths metres.

This module must never import anything from itsd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: (line id, direction, class name) -> crossings.
CountKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ZoneRow:
    """One zone over one interval (``None``: not measured)."""

    zone_id: str
    occupancy_mean: float | None = None
    occupied_fraction: float | None = None
    dwell_mean_s: float | None = None
    queue_max_m: float | None = None


@dataclass(frozen=True, slots=True)
class IntervalRow:
    """One camera over one interval ``[start_ms, end_ms)``, as its summary event said."""

    camera_id: str
    start_ms: int
    end_ms: int
    seconds: float
    frames: int = 0
    vehicles_in_view: int = 0
    #: Crossings inside the interval only, by line, direction and class (counts > 0).
    counts: Mapping[CountKey, int] = field(default_factory=dict)
    speed_samples: int = 0
    speed_mean_kmh: float | None = None
    speed_p85_kmh: float | None = None
    #: Width of a speed histogram bin; bin i covers [i * bin, (i + 1) * bin) km/h.
    speed_bin_kmh: float | None = None
    speed_histogram: tuple[int, ...] | None = None
    zones: tuple[ZoneRow, ...] = ()
    longest_queue_m: float | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        """The row's identity in the store: camera, interval start and end."""
        return (self.camera_id, self.start_ms, self.end_ms)
