"""Typed stub of the C extension ``itsd.sources._planecopy`` (see _planecopy.c).

Only ``itsd.sources.pyav`` imports it.
"""

from _typeshed import ReadableBuffer, WriteableBuffer

def copy_rows(
    dst: WriteableBuffer,
    dst_offset: int,
    src: ReadableBuffer,
    width: int,
    height: int,
    src_stride: int,
    /,
) -> int: ...
