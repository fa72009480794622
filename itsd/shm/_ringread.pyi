"""Typed stub of the C extension ``itsd.shm._ringread`` (see _ringread.c).

Only ``itsd.shm.record_ring`` imports this module.
"""

from _typeshed import ReadableBuffer

def read_records(
    buf: ReadableBuffer,
    header_size: int,
    capacity: int,
    max_record: int,
    position: int,
    head: int,
    max_records: int,
    /,
) -> tuple[list[bytes], int]: ...
