"""ISO-BMFF box framing for fragmented MP4: pure functions over bytes, no I/O.

Only what the stream format needs: split a file into top-level boxes, find nested boxes,
read the track timescale and the `avc1.PPCCLL` codec string from an init segment, and
rewrite each fragment's decode time (`tfdt`) and sequence number (`mfhd`) in place.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# Boxes that only hold other boxes (as opposed to payload), in the parts we walk.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts"}


class BoxError(ValueError):
    """Bytes that are not the ISO-BMFF structure we expect."""


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int  # offset of the box header in the buffer (bytes)
    size: int  # whole box, header included (bytes)
    header: int  # header length: 8, or 16 for 64-bit sizes (bytes)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def payload_start(self) -> int:
        return self.start + self.header


def iter_boxes(
    data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> Iterator[Box]:
    """Yield the boxes laid end to end in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise BoxError(f"truncated box header at offset {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise BoxError(f"truncated 64-bit box header at offset {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise BoxError(f"box {kind!r} at offset {pos} overruns its parent ({size} bytes)")
        yield Box(bytes(kind), pos, size, header)
        pos += size


def find_boxes(
    data: bytes | bytearray, path: list[bytes], start: int = 0, end: int | None = None
) -> list[Box]:
    """Every box reached by following `path` (box types) down from ``data[start:end]``."""
    found = [b for b in iter_boxes(data, start, end) if b.type == path[0]]
    if len(path) == 1:
        return found
    nested: list[Box] = []
    for box in found:
        nested.extend(find_boxes(data, path[1:], box.payload_start, box.end))
    return nested


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """Split a fragmented MP4 into (init segment, media fragments), dropping any `mfra`.

    The init segment is everything before the first `moof` (`ftyp` + `moov`); the media part
    is every `moof` and `mdat` after it, byte for byte.
    """
    boxes = list(iter_boxes(data))
    first_moof = next((b for b in boxes if b.type == b"moof"), None)
    if first_moof is None:
        raise BoxError("no moof box: not a fragmented MP4")
    init = data[: first_moof.start]
    media = b"".join(data[b.start : b.end] for b in boxes if b.type in (b"moof", b"mdat"))
    return init, media


def track_timescale(init: bytes) -> int:
    """The first track's media timescale (ticks per second) from its `mdhd`."""
    mdhd = find_boxes(init, [b"moov", b"trak", b"mdia", b"mdhd"])
    if not mdhd:
        raise BoxError("init segment has no mdhd box")
    box = mdhd[0]
    version = init[box.payload_start]
    offset = box.payload_start + (20 if version == 1 else 12)
    return int(struct.unpack_from(">I", init, offset)[0])


def codec_string(init: bytes) -> str:
    """The RFC 6381 codec string (``avc1.PPCCLL``) of the first track, for MSE."""
    stsd = find_boxes(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    if not stsd:
        raise BoxError("init segment has no stsd box")
    # stsd: version/flags (4) + entry_count (4), then sample entries.
    for entry in iter_boxes(init, stsd[0].payload_start + 8, stsd[0].end):
        if entry.type not in (b"avc1", b"avc3"):
            continue
        # VisualSampleEntry has 78 bytes of fixed fields before its child boxes.
        for child in iter_boxes(init, entry.payload_start + 78, entry.end):
            if child.type == b"avcC":
                p = child.payload_start
                profile, compat, level = init[p + 1], init[p + 2], init[p + 3]
                return f"{entry.type.decode()}.{profile:02x}{compat:02x}{level:02x}"
    raise BoxError("init segment has no avc1/avcC sample entry")


def retime_fragments(media: bytes, decode_offset: int, sequence_start: int) -> bytes:
    """Return `media` (moof+mdat...) with every `tfdt` shifted by `decode_offset` ticks and
    the `mfhd` sequence numbers renumbered from `sequence_start`.

    Box sizes do not change, so the `trun` data offsets (relative to the moof) stay valid.
    """
    out = bytearray(media)
    sequence = sequence_start
    for moof in (b for b in iter_boxes(out) if b.type == b"moof"):
        for mfhd in find_boxes(out, [b"mfhd"], moof.payload_start, moof.end):
            struct.pack_into(">I", out, mfhd.payload_start + 4, sequence)
        sequence += 1
        for tfdt in find_boxes(out, [b"traf", b"tfdt"], moof.payload_start, moof.end):
            p = tfdt.payload_start
            if out[p] == 1:
                (base,) = struct.unpack_from(">Q", out, p + 4)
                struct.pack_into(">Q", out, p + 4, base + decode_offset)
            else:
                (base,) = struct.unpack_from(">I", out, p + 4)
                if base + decode_offset >= 2**32:
                    raise BoxError("decode time overflows a version-0 tfdt")
                struct.pack_into(">I", out, p + 4, base + decode_offset)
    return bytes(out)


def decode_times(media: bytes) -> list[int]:
    """The `tfdt` base media decode time of each fragment in `media` (ticks)."""
    times = []
    for moof in (b for b in iter_boxes(media) if b.type == b"moof"):
        for tfdt in find_boxes(media, [b"traf", b"tfdt"], moof.payload_start, moof.end):
            p = tfdt.payload_start
            fmt = ">Q" if media[p] == 1 else ">I"
            times.append(int(struct.unpack_from(fmt, media, p + 4)[0]))
    return times


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200


def sample_fragment(
    samples: list[tuple[bytes, int]], track_id: int, decode_time: int, sequence: int
) -> bytes:
    """One `moof`+`mdat` for track `track_id` holding `samples` ((bytes, duration in track
    ticks) each, all sync samples), starting at `decode_time` ticks; default-base-is-moof,
    as MSE needs. Empty bytes when there are no samples."""
    if not samples:
        return b""
    mfhd = _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    tfhd = _full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id))
    tfdt = _full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    flags = _TRUN_DATA_OFFSET | _TRUN_SAMPLE_DURATION | _TRUN_SAMPLE_SIZE
    entries = b"".join(struct.pack(">II", duration, len(data)) for data, duration in samples)

    def moof(data_offset: int) -> bytes:
        trun = _full_box(b"trun", 0, flags, struct.pack(">Ii", len(samples), data_offset) + entries)
        return _box(b"moof", mfhd + _box(b"traf", tfhd + tfdt + trun))

    size = len(moof(0))
    return moof(size + 8) + _box(b"mdat", b"".join(data for data, _ in samples))


def tracks(init: bytes) -> dict[bytes, tuple[int, int]]:
    """Each track's (track ID, media timescale) by handler type (``vide``, ``soun``)."""
    out: dict[bytes, tuple[int, int]] = {}
    for trak in find_boxes(init, [b"moov", b"trak"]):
        tkhd = find_boxes(init, [b"tkhd"], trak.payload_start, trak.end)
        hdlr = find_boxes(init, [b"mdia", b"hdlr"], trak.payload_start, trak.end)
        mdhd = find_boxes(init, [b"mdia", b"mdhd"], trak.payload_start, trak.end)
        if not (tkhd and hdlr and mdhd):
            continue
        handler = bytes(init[hdlr[0].payload_start + 8 : hdlr[0].payload_start + 12])
        version = init[tkhd[0].payload_start]
        track_id = struct.unpack_from(">I", init, tkhd[0].payload_start + (20 if version else 12))
        version = init[mdhd[0].payload_start]
        offset = mdhd[0].payload_start + (20 if version == 1 else 12)
        out[handler] = (int(track_id[0]), int(struct.unpack_from(">I", init, offset)[0]))
    return out


def sample_entry(init: bytes, handler: bytes) -> bytes:
    """The `stsd` box of the track with `handler` (its codec configuration), byte for byte."""
    for trak in find_boxes(init, [b"moov", b"trak"]):
        hdlr = find_boxes(init, [b"mdia", b"hdlr"], trak.payload_start, trak.end)
        if hdlr and init[hdlr[0].payload_start + 8 : hdlr[0].payload_start + 12] == handler:
            stsd = find_boxes(
                init, [b"mdia", b"minf", b"stbl", b"stsd"], trak.payload_start, trak.end
            )
            if stsd:
                return bytes(init[stsd[0].start : stsd[0].end])
    raise BoxError(f"init segment has no {handler.decode()} track")
