"""Frame ring: one per camera, decoded frames from ONE writer to ONE reader, newest wins.

The decode process (writer) copies each frame into a free slot and publishes it; the
inference process (reader) takes the newest published frame, reads the pixels in place
(zero copy; the slot memory can be pinned for DMA) and releases the slot. The ring never
makes the writer wait: when the reader is slow, unread frames are overwritten (counted in
``dropped``) or skipped by the reader in favour of newer ones (counted in ``skipped``).
Losses happen here by design; everything downstream is lossless.

Layout (all integers little-endian; offsets in bytes)::

    0 +---------------------------- ring header (4096 bytes) -----------------------------+
      | 0   u64 magic "ITSDFRM1"  (stored last, with release: seeing it = header is valid) |
      | 8   u32 version           12  u32 header size (4096)                               |
      | 16  u32 slot count        20  u32 channels                                         |
      | 24  u32 max width         28  u32 max height                                       |
      | 32  u64 slot stride       40  u64 pixel offset in slot (4096)                      |
      | 48  u64 pixel capacity    56  u32 camera index      60  u32 creator pid            |
      | 128 writer line: u64 written | u64 dropped | u64 rejected | u64 last seq           |
      |     160 writer bell: u32 count | u32 sleeper (a lossless writer waiting for a slot)  |
      | 256 reader line: u64 read    | u64 skipped | u64 last read seq | u32 reader bell   |
   4096 +---------------------------- slot 0 (stride bytes) -------------------------------+
      | +0  u32 state word = state (bits 0-7) | tag = seq & 0xFFFFFF (bits 8-31)           |
      | +4  u32 camera index      +8  u64 sequence number                                  |
      | +16 i64 frame id          +24 i64 capture timestamp (ns, wall clock)               |
      | +32 i64 pts               +40 u32 width     +44 u32 height                         |
      | +48 u32 pixel format      +52 u32 channels  +56 u64 pixel bytes                    |
      | +64 .. +4095 unused (keeps the pixels page aligned)                                |
      | +4096 pixels: height x width x channels uint8, packed rows, page aligned           |
      |       (I420: Y plane, then U, then V, each packed: height*3/2 rows of width)       |
      |       (capacity max_w*max_h*channels, padded to a multiple of 4096)                |
      +---------------------------- slot 1 ... slot N-1 -----------------------------------+
      +------------------------------------------------------------------------------------+

Pixel formats (the slot's ``pixel format`` field, so a ring may mix them frame by frame):
RGB24 (0) and BGR24 (1) as (H, W, 3) arrays, GRAY8 (2) as (H, W, 1) in a 1-channel ring,
and I420 (3: planar YUV 4:2:0, BT.601 limited range, as H.264 decoders give it; even
width and height only) as an (H * 3 / 2, W) array, OpenCV's I420 layout: 1.5 bytes per
pixel, so it fits a 3-channel ring's slots and the decode worker copies the decoder's
planes instead of converting colour. Readers turn any of them into RGB or BGR with
``itsd.shm.frame_pixels`` (``to_rgb`` / ``to_bgr``), never by hand.

The writer's and the reader's counters sit on separate 128-byte lines (no false sharing);
each slot header has its own cache line; pixel data starts on a page boundary (DMA and
``cudaHostRegister`` friendly; ``FrameSlot.address`` is the raw pointer).

Slot states and transitions (every transition is a ``cas_u32`` on the whole state word,
acq_rel; the tag makes a stale word fail the CAS, so a slot overwritten and republished
between the reader's look and its CAS is never taken by mistake)::

    state    value  owner   transitions
    FREE       0    nobody  FREE -> WRITING      writer begin_write()
    WRITING    1    writer  WRITING -> READY     writer commit() (new seq and tag)
                            WRITING -> FREE      writer abort(); recover_writer()
    READY      2    nobody  READY -> READING     reader acquire_newest() (newest READY) or
                                                 acquire_oldest() (oldest unread READY)
                            READY -> FREE        reader acquire_newest(): older READY, "skipped"
                            READY -> WRITING     writer, no FREE slot: overwrites the OLDEST
                                                 unread frame, "dropped"
    READING    3    reader  READING -> FREE      reader release(); recover_reader()

Publication: the writer fills pixels and header fields with plain stores, then publishes
READY with a release CAS; the reader CASes READY -> READING (acquire) before it reads
header or pixels. The writer never touches a READING slot; the reader never touches a
WRITING slot. Sequence numbers are given at commit, so publication order is sequence
order; the reader remembers the last sequence it returned (also in the header, for a
restarted reader) and never returns an older or equal one: returned sequence numbers
strictly increase.

If no slot is FREE or READY (the reader holds all others), ``begin_write`` returns None
and counts the frame in ``dropped`` and ``rejected``. With one slot held by the reader
and one being written, two slots suffice; three or more let a frame wait while the
reader works.

Crash recovery: the supervisor calls ``recover_reader()`` (READING -> FREE) before it
starts a new reader, and ``recover_writer()`` (WRITING -> FREE) before a new writer. Never
call them while a process of that role is alive. A ``FrameRing`` object is not
thread-safe: one thread per role.

Lossless use (recorded footage): the writer checks ``has_free_slot()`` and waits before
each write (the waiting is the writer's business, not this module's) and the reader
takes ``acquire_oldest()``; then no frame is dropped or skipped.

Peeking (a third party such as the dashboard): ``peek`` copies a published frame without
any state change, seqlock style: load the slot's state word (acquire), skip it when
WRITING, read the header (its sequence must match the word's tag), copy the pixels, full
fence, load the word again and keep the copy only if the tag is the same and the slot is
not WRITING. Pixels change only in WRITING and every commit gives a new tag, so a kept
copy is whole; the one case it cannot see is a write begun and aborted (a writer error)
on that very slot during the copy, which may mix two frames in a picture nobody else
reads. The peeker never CASes, so the reader's and the writer's rules are untouched.

This module must never block the writer, never copy pixels on the reader side (``peek``
copies for a third party, never for the reader), and never import anything else from
``itsd`` (only ``itsd.shm``).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

import numpy as np

from itsd.shm import bells
from itsd.shm.atomics import (
    bell_ring,
    cas_u32,
    fence,
    fetch_add_u64,
    load_u32,
    load_u64,
    store_u32,
    store_u64,
)
from itsd.shm.segments import Segment, SegmentBacked

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "PIXEL_FORMAT_BGR24",
    "PIXEL_FORMAT_GRAY8",
    "PIXEL_FORMAT_I420",
    "PIXEL_FORMAT_RGB24",
    "SLOT_FREE",
    "SLOT_READING",
    "SLOT_READY",
    "SLOT_WRITING",
    "FrameRing",
    "FrameSlot",
    "PeekedFrame",
    "RingStats",
    "WriteSlot",
]

PIXEL_FORMAT_RGB24: Final = 0
PIXEL_FORMAT_BGR24: Final = 1
PIXEL_FORMAT_GRAY8: Final = 2
PIXEL_FORMAT_I420: Final = 3
#: Channels of the ring each pixel format goes into (I420 takes 1.5 of a 3-channel slot's
#: 3 bytes per pixel).
PIXEL_FORMAT_CHANNELS: Final = {
    PIXEL_FORMAT_RGB24: 3,
    PIXEL_FORMAT_BGR24: 3,
    PIXEL_FORMAT_GRAY8: 1,
    PIXEL_FORMAT_I420: 3,
}


def frame_shape(pixel_format: int, width: int, height: int, channels: int) -> tuple[int, ...]:
    """Array shape of a ``width`` x ``height`` frame in ``pixel_format`` (see the module
    docstring): (H * 3 / 2, W) for I420, else (H, W, channels)."""
    if pixel_format == PIXEL_FORMAT_I420:
        return (height * 3 // 2, width)
    return (height, width, channels)


SLOT_FREE: Final = 0
SLOT_WRITING: Final = 1
SLOT_READY: Final = 2
SLOT_READING: Final = 3
SLOT_STATE_NAMES: Final = {0: "FREE", 1: "WRITING", 2: "READY", 3: "READING"}

MAGIC: Final = int.from_bytes(b"ITSDFRM1", "little")
VERSION: Final = 2  # 2: I420 slots (pixel format 3, 1.5 bytes per pixel)
PAGE: Final = 4096
HEADER_SIZE: Final = PAGE
SLOT_PIXELS_OFFSET: Final = PAGE
MAX_SLOTS: Final = 4096
MAX_SIDE: Final = 16384

_STATE_MASK: Final = 0xFF
_U8: Final = np.dtype(np.uint8)
_TAG_MASK: Final = 0xFF_FFFF
_KEEP_TAG: Final = 0xFFFF_FF00

# ring header
_H_MAGIC = 0
_H_LAYOUT = struct.Struct("<IIIIIIQQQII")  # version .. creator pid, at offset 8
_H_WRITTEN = 128
_H_DROPPED = 136
_H_REJECTED = 144
_H_LAST_SEQ = 152
_H_WBELL = 160  # the writer's bell: u32 count (futex word), u32 sleeper flag
_H_READ = 256
_H_SKIPPED = 264
_H_LAST_READ = 272
_H_BELL = 280

# slot header (after the u32 state word at +0)
_S_SEQ = 8
_S_FIELDS = struct.Struct("<IQqqqIIIIQ")  # camera .. nbytes, at offset 4


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True, slots=True)
class RingStats:
    """Counters of a frame ring (monotonic since creation).

    ``written``: frames published. ``dropped``: frames lost on the writer side (an unread
    frame overwritten, or a frame refused because no slot was usable; the latter also in
    ``rejected``). ``skipped``: published frames the reader passed over for a newer one.
    ``read``: frames handed to the reader. At rest, ``written == read + skipped +
    (dropped - rejected) + pending``.
    """

    written: int
    dropped: int
    skipped: int
    read: int
    rejected: int


@dataclass(frozen=True, slots=True)
class PeekedFrame:
    """A copy of a published frame, taken by ``FrameRing.peek``."""

    seq: int
    frame_id: int
    capture_ts_ns: int
    width: int
    height: int
    pixel_format: int
    pixels: npt.NDArray[np.uint8]  # (H, W, C), (H * 3 / 2, W) for I420; a private copy


class WriteSlot:
    """A slot in WRITING state, owned by the writer until ``commit`` or ``abort``.

    Fill ``pixels`` (a writable uint8 view on the slot: (H, W, C), or (H * 3 / 2, W) for a
    slot begun as I420) in place, then commit. As a context manager it aborts on exit
    unless committed.
    """

    __slots__ = (
        "_done",
        "_ring",
        "_word",
        "address",
        "height",
        "index",
        "nbytes",
        "pixel_format",
        "pixels",
        "width",
    )

    def __init__(
        self,
        ring: FrameRing,
        index: int,
        *,
        word: int,
        pixels: npt.NDArray[np.uint8],
        address: int,
        width: int,
        height: int,
        pixel_format: int = PIXEL_FORMAT_RGB24,
    ) -> None:
        self._ring = ring
        self._word = word
        self._done = False
        self.index = index
        self.pixels = pixels
        self.address = address
        self.width = width
        self.height = height
        self.pixel_format = pixel_format
        self.nbytes = pixels.nbytes

    def commit(
        self,
        *,
        frame_id: int,
        capture_ts_ns: int,
        pts: int,
        pixel_format: int | None = None,
    ) -> int:
        """Publish the frame (WRITING -> READY, release); return its sequence number.

        ``pixel_format`` defaults to the one the slot was begun with; a format of another
        layout (I420 against a packed one) is refused."""
        if pixel_format is None:
            pixel_format = self.pixel_format
        elif (pixel_format == PIXEL_FORMAT_I420) != (self.pixel_format == PIXEL_FORMAT_I420):
            raise ValueError(
                f"frame ring {self._ring.name!r}: slot {self.index} was begun as pixel format "
                f"{self.pixel_format}, cannot commit it as {pixel_format}"
            )
        if self._done:
            raise RuntimeError(
                f"frame ring {self._ring.name!r}: slot {self.index} was already "
                "committed or aborted"
            )
        seq = self._ring._commit(self, frame_id, capture_ts_ns, pts, pixel_format)
        self._done = True
        return seq

    def abort(self) -> None:
        """Give the slot back unpublished (WRITING -> FREE). Idempotent.

        If the claim overwrote an unread frame, that frame stays lost (counted in
        ``dropped``): its pixels may already be partly overwritten.
        """
        if self._done:
            return
        self._done = True
        self._ring._abort(self)

    @property
    def done(self) -> bool:
        """True once committed or aborted."""
        return self._done

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def __repr__(self) -> str:
        return (
            f"WriteSlot(ring={self._ring.name!r}, index={self.index}, {self.width}x{self.height})"
        )


class FrameSlot:
    """A frame the reader holds (slot in READING state) until ``release``.

    ``pixels`` is a read-only zero-copy uint8 view on the slot memory ((H, W, C); (H * 3 /
    2, W) when ``pixel_format`` is I420: ``itsd.shm.frame_pixels`` converts): it is
    valid only until ``release`` (the writer reuses the slot right after); copy what must
    outlive it. ``address`` is the raw pointer of the pixel bytes, valid while the ring is
    mapped. Use as a context manager, or call ``release`` in a ``finally``.
    """

    __slots__ = (
        "_released",
        "_ring",
        "_word",
        "address",
        "camera_key",
        "capture_ts_ns",
        "frame_id",
        "height",
        "index",
        "nbytes",
        "pixel_format",
        "pixels",
        "pts",
        "seq",
        "width",
    )

    def __init__(
        self,
        ring: FrameRing,
        index: int,
        *,
        word: int,
        fields: tuple[int, ...],
        pixels: npt.NDArray[np.uint8],
        address: int,
    ) -> None:
        self._ring = ring
        self._word = word
        self._released = False
        self.index = index
        (
            self.camera_key,
            self.seq,
            self.frame_id,
            self.capture_ts_ns,
            self.pts,
            self.width,
            self.height,
            self.pixel_format,
            _channels,
            self.nbytes,
        ) = fields
        self.pixels = pixels
        self.address = address

    def release(self) -> None:
        """Give the slot back to the writer (READING -> FREE). Idempotent."""
        if self._released:
            return
        self._released = True
        self._ring._release(self)

    @property
    def released(self) -> bool:
        """True once released."""
        return self._released

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"FrameSlot(ring={self._ring.name!r}, index={self.index}, seq={self.seq}, "
            f"camera={self.camera_key}, frame_id={self.frame_id}, {self.width}x{self.height})"
        )


class FrameRing(SegmentBacked):
    """A single-writer single-reader ring of frame slots in a shared-memory segment."""

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self._buf = segment.buf
        self.name = segment.name
        magic = load_u64(self._buf, _H_MAGIC)
        if magic != MAGIC:
            what = (
                "is not initialised yet (its creator is still setting it up)"
                if magic == 0
                else f"is not a frame ring (magic {magic.to_bytes(8, 'little')!r})"
            )
            segment.close()
            raise ValueError(f"shared-memory segment {segment.name!r} {what}")
        (
            version,
            header_size,
            slot_count,
            channels,
            max_width,
            max_height,
            stride,
            pix_off,
            capacity,
            camera_key,
            creator_pid,
        ) = _H_LAYOUT.unpack_from(self._buf, 8)
        if version != VERSION or header_size != HEADER_SIZE:
            segment.close()
            raise ValueError(
                f"frame ring {segment.name!r} has layout version {version} (header {header_size} "
                f"bytes); this build reads version {VERSION}: restart all itsd processes together"
            )
        need = HEADER_SIZE + slot_count * stride
        if (
            segment.size < need
            or pix_off + capacity > stride
            or capacity != max_width * max_height * channels
            or slot_count < 2
        ):
            segment.close()
            raise ValueError(
                f"frame ring {segment.name!r}: inconsistent header ({slot_count} slots of "
                f"{stride} bytes, {max_width}x{max_height}x{channels}) for {segment.size} bytes"
            )
        self.slot_count: int = slot_count
        self.channels: int = channels
        self.max_width: int = max_width
        self.max_height: int = max_height
        self.camera_key: int = camera_key
        self.creator_pid: int = creator_pid
        self.slot_stride: int = stride
        self.slot_capacity: int = capacity
        self._closed = False
        self._held: dict[int, FrameSlot] = {}
        self._writing: dict[int, WriteSlot] = {}
        self._formats = frozenset(f for f, c in PIXEL_FORMAT_CHANNELS.items() if c == channels)

        self._all: npt.NDArray[np.uint8] = np.frombuffer(self._buf, dtype=np.uint8)
        self.base_address: int = int(self._all.__array_interface__["data"][0])
        self.mapped_size: int = segment.size
        self._state_off = [HEADER_SIZE + i * stride for i in range(slot_count)]
        self._seq_off = [o + _S_SEQ for o in self._state_off]
        self._field_off = [o + 4 for o in self._state_off]
        self._pix_off = [o + pix_off for o in self._state_off]
        self._pix_addr = [self.base_address + o for o in self._pix_off]
        self._slot_arr = [self._all[o : o + capacity] for o in self._pix_off]
        self._wviews: list[tuple[int, int, int, npt.NDArray[np.uint8]] | None] = [None] * slot_count
        self._rviews: list[tuple[int, int, int, npt.NDArray[np.uint8]] | None] = [None] * slot_count
        self._last_read = load_u64(self._buf, _H_LAST_READ)

    # ------------------------------------------------------------------ construction

    @staticmethod
    def required_size(slot_count: int, max_width: int, max_height: int, channels: int = 3) -> int:
        """Bytes of shared memory a ring with these dimensions needs."""
        FrameRing._check_dims(slot_count, max_width, max_height, channels)
        stride = SLOT_PIXELS_OFFSET + _round_up(max_width * max_height * channels, PAGE)
        return HEADER_SIZE + slot_count * stride

    @staticmethod
    def _check_dims(slot_count: int, max_width: int, max_height: int, channels: int) -> None:
        if not 2 <= slot_count <= MAX_SLOTS:
            raise ValueError(f"frame ring slot_count must be 2..{MAX_SLOTS}, got {slot_count}")
        if not (1 <= max_width <= MAX_SIDE and 1 <= max_height <= MAX_SIDE):
            raise ValueError(
                f"frame ring max size must be 1..{MAX_SIDE} per side, got {max_width}x{max_height}"
            )
        if channels not in (1, 3):
            raise ValueError(f"frame ring channels must be 1 (gray) or 3 (RGB/BGR), got {channels}")

    @classmethod
    def create(
        cls,
        name: str,
        *,
        camera_key: int,
        slot_count: int,
        max_width: int,
        max_height: int,
        channels: int = 3,
        populate: bool = True,
    ) -> Self:
        """Create the ring's segment (this process becomes its creator, the only unlinker)."""
        if not 0 <= camera_key <= 0xFFFF_FFFF:
            raise ValueError(f"frame ring {name!r}: camera_key must be >= 0, got {camera_key}")
        size = cls.required_size(slot_count, max_width, max_height, channels)
        stride = (size - HEADER_SIZE) // slot_count

        def init(buf: mmap.mmap) -> None:
            _H_LAYOUT.pack_into(
                buf,
                8,
                VERSION,
                HEADER_SIZE,
                slot_count,
                channels,
                max_width,
                max_height,
                stride,
                SLOT_PIXELS_OFFSET,
                max_width * max_height * channels,
                camera_key,
                os.getpid(),
            )
            store_u64(buf, _H_MAGIC, MAGIC)  # release: publishes the header

        return cls._create_initialised(name, size, init, populate=populate)

    @classmethod
    def attach(cls, name: str, *, populate: bool = True) -> Self:
        """Map an existing ring (pre-faulted by default); see ``SegmentBacked.attach``."""
        return super().attach(name, populate=populate)

    # ------------------------------------------------------------------ writer

    def begin_write(
        self, width: int, height: int, pixel_format: int = PIXEL_FORMAT_RGB24
    ) -> WriteSlot | None:
        """Claim a slot for a ``width`` x ``height`` frame (zero-copy write) in
        ``pixel_format`` (its ``pixels`` view has that format's shape).

        Takes a FREE slot, else overwrites the oldest unread (READY) frame, counted in
        ``dropped``. Returns None, counted in ``dropped`` and ``rejected``, when every other
        slot is held by the reader or already being written.
        """
        if self._closed:
            raise ValueError(f"frame ring {self.name!r} is closed")
        self._check_size(width, height)
        self._check_format(pixel_format, width, height)
        claimed = self._claim()
        if claimed < 0:
            return None
        index, word = claimed & 0xFFFF, claimed >> 16
        ws = WriteSlot(
            self,
            index,
            word=word,
            pixels=self._writer_view(index, width, height, pixel_format),
            address=self._pix_addr[index],
            width=width,
            height=height,
            pixel_format=pixel_format,
        )
        self._writing[index] = ws
        return ws

    def _check_size(self, width: int, height: int) -> None:
        if not (0 < width <= self.max_width and 0 < height <= self.max_height):
            raise ValueError(
                f"frame ring {self.name!r} (camera {self.camera_key}): frame {width}x{height} "
                f"does not fit its slots (max {self.max_width}x{self.max_height}, min 1x1)"
            )

    def _check_format(self, pixel_format: int, width: int = 2, height: int = 2) -> None:
        if pixel_format not in self._formats:
            raise ValueError(
                f"frame ring {self.name!r}: pixel format {pixel_format} does not match the "
                f"ring's {self.channels} channel(s) (RGB24=0/BGR24=1/I420=3 need 3, GRAY8=2 "
                "needs 1)"
            )
        if pixel_format == PIXEL_FORMAT_I420 and (width % 2 or height % 2):
            raise ValueError(
                f"frame ring {self.name!r}: an I420 frame needs an even width and height, "
                f"got {width}x{height}"
            )

    def _claim(self) -> int:
        """Move a slot to WRITING; return ``index | word << 16`` (word: the WRITING word), or -1."""
        buf = self._buf
        state_off = self._state_off
        seq_off = self._seq_off
        for _attempt in range(4):
            oldest = -1
            oldest_seq = 0
            oldest_word = 0
            for i in range(self.slot_count):
                word = load_u32(buf, state_off[i])
                state = word & _STATE_MASK
                if state == SLOT_FREE:
                    new = (word & _KEEP_TAG) | SLOT_WRITING
                    if cas_u32(buf, state_off[i], word, new):
                        return i | new << 16
                elif state == SLOT_READY:
                    seq = load_u64(buf, seq_off[i])
                    if oldest < 0 or seq < oldest_seq:
                        oldest, oldest_seq, oldest_word = i, seq, word
            if oldest < 0:
                break
            new = (oldest_word & _KEEP_TAG) | SLOT_WRITING
            if cas_u32(buf, state_off[oldest], oldest_word, new):
                fetch_add_u64(buf, _H_DROPPED, 1)  # an unread frame is overwritten
                return oldest | new << 16
        fetch_add_u64(buf, _H_DROPPED, 1)
        fetch_add_u64(buf, _H_REJECTED, 1)
        return -1

    def _view(self, index: int, width: int, height: int, fmt: int) -> npt.NDArray[np.uint8]:
        shape = frame_shape(fmt, width, height, self.channels)
        n = 1
        for d in shape:
            n *= d
        return self._slot_arr[index][:n].reshape(shape)

    def _writer_view(
        self, index: int, width: int, height: int, fmt: int = PIXEL_FORMAT_RGB24
    ) -> npt.NDArray[np.uint8]:
        """Writable view on slot ``index`` (shape by format), cached while size and format
        stay the same."""
        cached = self._wviews[index]
        if cached is not None and cached[:3] == (width, height, fmt):
            return cached[3]
        view = self._view(index, width, height, fmt)
        self._wviews[index] = (width, height, fmt, view)
        return view

    def _publish(
        self,
        index: int,
        word: int,
        *,
        size: tuple[int, int],
        frame_id: int,
        ts: int,
        pts: int,
        pixel_format: int,
    ) -> int:
        """Write the slot header, then WRITING -> READY (release); return the sequence number."""
        buf = self._buf
        width, height = size
        nbytes = (
            width * height * 3 // 2
            if pixel_format == PIXEL_FORMAT_I420
            else width * height * self.channels
        )
        seq = load_u64(buf, _H_LAST_SEQ) + 1
        try:
            _S_FIELDS.pack_into(
                buf,
                self._field_off[index],
                self.camera_key,
                seq,
                frame_id,
                ts,
                pts,
                width,
                height,
                pixel_format,
                self.channels,
                nbytes,
            )
        except struct.error as exc:
            raise ValueError(
                f"frame ring {self.name!r}: frame_id={frame_id}, capture_ts_ns={ts}, pts={pts} "
                f"must be signed 64-bit integers ({exc})"
            ) from None
        store_u64(buf, _H_LAST_SEQ, seq)
        if not cas_u32(buf, self._state_off[index], word, ((seq & _TAG_MASK) << 8) | SLOT_READY):
            raise RuntimeError(
                f"frame ring {self.name!r}: slot {index} was taken away while being written "
                "(recover_writer() called while this writer was alive?)"
            )
        fetch_add_u64(buf, _H_WRITTEN, 1)
        bells.ring_reader(buf, _H_BELL)  # wake a reader sleeping on its empty inputs
        return seq

    def _unclaim(self, index: int, word: int) -> None:
        """WRITING -> FREE, unless the slot was recovered meanwhile."""
        if not self._closed:
            cas_u32(self._buf, self._state_off[index], word, (word & _KEEP_TAG) | SLOT_FREE)

    def _commit(self, ws: WriteSlot, frame_id: int, ts: int, pts: int, pixel_format: int) -> int:
        self._check_format(pixel_format, ws.width, ws.height)
        self._writing.pop(ws.index, None)
        return self._publish(
            ws.index,
            ws._word,
            size=(ws.width, ws.height),
            frame_id=frame_id,
            ts=ts,
            pts=pts,
            pixel_format=pixel_format,
        )

    def _abort(self, ws: WriteSlot) -> None:
        self._writing.pop(ws.index, None)
        self._unclaim(ws.index, ws._word)

    def write(
        self,
        pixels: npt.NDArray[np.uint8],
        *,
        frame_id: int,
        capture_ts_ns: int,
        pts: int,
        pixel_format: int = PIXEL_FORMAT_RGB24,
    ) -> bool:
        """Copy a (H, W, C) uint8 frame into a slot (one copy) and publish it.

        Returns False when no slot was usable (the frame is counted as dropped). A gray
        ring (1 channel) also takes (H, W) arrays; an I420 frame is (H * 3 / 2, W). Any
        strides are accepted; a C-contiguous frame is one memcpy.
        """
        if self._closed:
            raise ValueError(f"frame ring {self.name!r} is closed")
        shape = pixels.shape
        if pixel_format == PIXEL_FORMAT_I420:
            if pixels.dtype != _U8 or len(shape) != 2 or shape[0] % 3:
                raise ValueError(
                    f"frame ring {self.name!r}: an I420 frame is an (H * 3 / 2, W) uint8 "
                    f"array, got {shape} {pixels.dtype}"
                )
            width, height = shape[1], shape[0] * 2 // 3
            self._check_size(width, height)
            self._check_format(pixel_format, width, height)
        else:
            if pixels.dtype != _U8 or len(shape) != 3 or shape[2] != self.channels:
                if pixels.dtype != _U8:
                    raise ValueError(
                        f"frame ring {self.name!r}: pixels must be uint8, got {pixels.dtype}"
                    )
                if len(shape) == 2 and self.channels == 1:
                    pixels = pixels.reshape(shape[0], shape[1], 1)
                    shape = pixels.shape
                else:
                    raise ValueError(
                        f"frame ring {self.name!r} (camera {self.camera_key}): pixels must "
                        f"have shape (H, W, {self.channels}), got {shape}"
                    )
            if pixel_format not in self._formats:
                self._check_format(pixel_format)
            height, width = shape[0], shape[1]
            self._check_size(width, height)
        claimed = self._claim()
        if claimed < 0:
            return False
        index, word = claimed & 0xFFFF, claimed >> 16
        try:
            np.copyto(self._writer_view(index, width, height, pixel_format), pixels)
            self._publish(
                index,
                word,
                size=(width, height),
                frame_id=frame_id,
                ts=capture_ts_ns,
                pts=pts,
                pixel_format=pixel_format,
            )
        except BaseException:
            self._unclaim(index, word)
            raise
        return True

    def recover_writer(self) -> int:
        """After a writer crash: slots left WRITING become FREE; returns how many."""
        return self._recover(SLOT_WRITING)

    # ------------------------------------------------------------------ reader

    def acquire_newest(self) -> FrameSlot | None:
        """Take the newest unread frame (READY -> READING); None if there is nothing new.

        Older unread frames are freed for the writer and counted in ``skipped``. Returned
        sequence numbers strictly increase.
        """
        return self._acquire(newest=True)

    def acquire_oldest(self) -> FrameSlot | None:
        """Take the oldest unread frame (READY -> READING) and skip nothing.

        For lossless sources (recorded footage processed frame by frame): with a writer
        that waits for a FREE slot (``has_free_slot``) before each write, every frame is
        read, in order. Returned sequence numbers strictly increase.
        """
        return self._acquire(newest=False)

    def has_free_slot(self) -> bool:
        """True when a slot is FREE: a write now overwrites no unread frame."""
        return any(s == SLOT_FREE for s in self.slot_states())

    def _acquire(self, newest: bool) -> FrameSlot | None:
        if self._closed:
            raise ValueError(f"frame ring {self.name!r} is closed")
        buf = self._buf
        state_off = self._state_off
        seq_off = self._seq_off
        for _attempt in range(16):
            last = self._last_read
            ready: list[tuple[int, int, int]] = []
            best = -1
            best_seq = last
            best_word = 0
            for i in range(self.slot_count):
                word = load_u32(buf, state_off[i])
                if word & _STATE_MASK == SLOT_READY:
                    seq = load_u64(buf, seq_off[i])
                    ready.append((i, word, seq))
                    if newest:
                        if seq > best_seq:
                            best, best_seq, best_word = i, seq, word
                    elif seq > last and (best < 0 or seq < best_seq):
                        best, best_seq, best_word = i, seq, word
            if best < 0:
                if ready:
                    self._skip(ready, last + 1)  # leftovers not newer than the last read
                return None
            taken = (best_word & _KEEP_TAG) | SLOT_READING
            if not cas_u32(buf, state_off[best], best_word, taken):
                continue  # the writer overwrote it meanwhile: look again
            fields = _S_FIELDS.unpack_from(buf, self._field_off[best])
            seq = fields[1]
            if (seq & _TAG_MASK) != best_word >> 8 or seq <= last:
                store_u32(buf, state_off[best], (best_word & _KEEP_TAG) | SLOT_FREE)
                raise RuntimeError(
                    f"frame ring {self.name!r}: slot {best} holds sequence {seq} but its state "
                    f"word says tag {best_word >> 8:#x} (last read {last}): ring corrupted"
                )
            if newest:
                self._skip(ready, seq)
            self._last_read = seq
            store_u64(buf, _H_LAST_READ, seq)
            fetch_add_u64(buf, _H_READ, 1)
            view = self._reader_view(best, fields[5], fields[6], fields[7])
            slot = FrameSlot(
                self, best, word=taken, fields=fields, pixels=view, address=self._pix_addr[best]
            )
            self._held[best] = slot
            return slot
        return None

    def _reader_view(self, index: int, width: int, height: int, fmt: int) -> npt.NDArray[np.uint8]:
        """Read-only view on slot ``index`` (shape by format), cached while size and format
        stay the same."""
        cached = self._rviews[index]
        if cached is not None and cached[:3] == (width, height, fmt):
            return cached[3]
        view = self._view(index, width, height, fmt)
        view.flags.writeable = False
        self._rviews[index] = (width, height, fmt, view)
        return view

    def _skip(self, ready: list[tuple[int, int, int]], below: int) -> None:
        """Free the READY slots seen with a sequence number below ``below``."""
        buf = self._buf
        n = 0
        for i, word, seq in ready:
            if seq < below and cas_u32(
                buf, self._state_off[i], word, (word & _KEEP_TAG) | SLOT_FREE
            ):
                n += 1
        if n:
            fetch_add_u64(buf, _H_SKIPPED, n)
            bell_ring(buf, _H_WBELL)

    def _release(self, slot: FrameSlot) -> None:
        if self._held.get(slot.index) is slot:
            del self._held[slot.index]
        if self._closed:
            return
        word = slot._word
        cas_u32(self._buf, self._state_off[slot.index], word, (word & _KEEP_TAG) | SLOT_FREE)
        bell_ring(self._buf, _H_WBELL)  # a system call only while the writer sleeps

    def wait_free_slot(self, timeout: float) -> bool:
        """Writer: sleep until the reader frees a slot, at most ``timeout`` seconds; True
        when a slot is FREE (a lossless source waits here instead of overwriting)."""
        if self.has_free_slot():
            return True
        count = bells.arm(self._buf, _H_WBELL)
        if self.has_free_slot():
            bells.disarm(self._buf, _H_WBELL)
            return True
        bells.wait(self._buf, _H_WBELL, count, timeout)
        return self.has_free_slot()

    def set_reader_bell(self, slot: int | None) -> None:
        """Have the writer ring control slot ``slot``'s doorbell after each frame (None:
        stop); a new reader of the camera re-stamps it."""
        bells.set_reader(self._buf, _H_BELL, slot)

    def recover_reader(self) -> int:
        """After a reader crash: slots left READING become FREE; returns how many."""
        return self._recover(SLOT_READING)

    def _recover(self, state: int) -> int:
        n = 0
        for off in self._state_off:
            word = load_u32(self._buf, off)
            if word & _STATE_MASK == state and cas_u32(
                self._buf, off, word, (word & _KEEP_TAG) | SLOT_FREE
            ):
                n += 1
        if n and not self._closed:
            bell_ring(self._buf, _H_WBELL)
        return n

    # ------------------------------------------------------------------ peeking

    def peek(
        self, frame_id: int | None = None, *, taken: bool = False, attempts: int = 4
    ) -> PeekedFrame | None:
        """Copy the frame ``frame_id`` if a slot still holds it, else (with ``taken``) the
        frame the reader took last if a slot still holds it, else the newest published one.

        ``taken`` finds a frame that goes through inference (the newest may be skipped).
        Read-only: no slot changes state, no counter moves (see "Peeking" above). None
        when nothing was published yet or every attempt met a slot being rewritten.
        """
        if self._closed:
            raise ValueError(f"frame ring {self.name!r} is closed")
        buf = self._buf
        for _attempt in range(attempts):
            found: list[tuple[int, int, tuple[int, ...]]] = []
            for i in range(self.slot_count):
                word = load_u32(buf, self._state_off[i])
                if word & _STATE_MASK == SLOT_WRITING or word >> 8 == 0:
                    continue
                fields = _S_FIELDS.unpack_from(buf, self._field_off[i])
                if fields[1] == 0 or fields[1] & _TAG_MASK != word >> 8:
                    continue
                found.append((i, word, fields))
            if not found:
                return None
            pick = next((f for f in found if f[2][2] == frame_id), None)
            if pick is None and taken:
                last_read = load_u64(buf, _H_LAST_READ)
                pick = next((f for f in found if f[2][1] == last_read), None)
            if pick is None:
                pick = max(found, key=lambda f: f[2][1])
            index, word, fields = pick
            width, height = fields[5], fields[6]
            if not (0 < width <= self.max_width and 0 < height <= self.max_height):
                continue
            shape = frame_shape(fields[7], width, height, self.channels)
            n = int(np.prod(shape))
            pixels = np.array(self._slot_arr[index][:n]).reshape(shape)
            fence()
            after = load_u32(buf, self._state_off[index])
            if after >> 8 == word >> 8 and after & _STATE_MASK != SLOT_WRITING:
                return PeekedFrame(
                    fields[1], fields[2], fields[3], width, height, fields[7], pixels
                )
        return None

    # ------------------------------------------------------------------ inspection

    def stats(self) -> RingStats:
        """The ring's counters (each read atomically; together a near-consistent snapshot)."""
        buf = self._buf
        return RingStats(
            written=load_u64(buf, _H_WRITTEN),
            dropped=load_u64(buf, _H_DROPPED),
            skipped=load_u64(buf, _H_SKIPPED),
            read=load_u64(buf, _H_READ),
            rejected=load_u64(buf, _H_REJECTED),
        )

    def slot_states(self) -> list[int]:
        """Current state of each slot (``SLOT_FREE`` .. ``SLOT_READING``)."""
        return [load_u32(self._buf, off) & _STATE_MASK for off in self._state_off]

    def pending(self) -> int:
        """Number of READY (published, unread) slots."""
        return sum(1 for s in self.slot_states() if s == SLOT_READY)

    def last_seq(self) -> int:
        """Sequence number of the last published frame (0 before the first)."""
        return load_u64(self._buf, _H_LAST_SEQ)

    # ------------------------------------------------------------------ lifetime

    def _on_close(self) -> None:
        """Release held slots and abort open writes before unmapping."""
        for slot in list(self._held.values()):
            slot.release()
        for ws in list(self._writing.values()):
            ws.abort()
        self._slot_arr = []
        self._wviews = []
        self._rviews = []
        del self._all

    def __repr__(self) -> str:
        return (
            f"FrameRing({self.name!r}, camera={self.camera_key}, slots={self.slot_count}, "
            f"max={self.max_width}x{self.max_height}x{self.channels})"
        )
