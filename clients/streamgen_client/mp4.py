"""Saving a job's stream: segment files on disk and the one concatenated MP4.

The continuous form is the init segment followed by every fragment in order, byte for byte
(no remuxing, no ffmpeg): that is one valid fragmented MP4. `concatenate` builds it in
memory; `SegmentWriter` writes it to disk as the segments arrive (to ``NAME.part``, renamed
when the job completes), together with the per-segment files:

    DIR/init.mp4              the init segment (ftyp + moov)
    DIR/fragment_NNNN.m4s     segment NNNN's fragment (moof + mdat, continuous decode time)
    DIR/segment_NNNN.mp4      segment NNNN alone (init + fragment at time 0), plays by itself
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IncompleteVideo
from .events import CompleteEvent, SegmentEvent, StartEvent, StreamEvent


def box_types(data: bytes, what: str) -> list[bytes]:
    """The top-level box types of `data`; `IncompleteVideo` naming `what` if it is not boxes."""
    try:
        return top_level_boxes(data)
    except ValueError as exc:
        raise IncompleteVideo(f"{what} is not ISO-BMFF boxes: {exc}") from exc


def top_level_boxes(data: bytes) -> list[bytes]:
    """The types of the ISO-BMFF boxes laid end to end in `data`, in order; `ValueError` if
    `data` is not whole boxes.

    A box header is a 32-bit big-endian size (bytes, header included) and a 4-byte type;
    size 1 means a 64-bit size follows the type, size 0 means the box runs to the end of
    `data`. Only headers are read: the client checks the layout, it does not parse boxes.
    """
    types: list[bytes] = []
    end = len(data)
    pos = 0
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at offset {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise ValueError(f"truncated 64-bit box header at offset {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"box {kind!r} at offset {pos} is {size} bytes, under its header")
        if pos + size > end:
            raise ValueError(f"box {kind!r} at offset {pos} overruns the data ({size} bytes)")
        types.append(kind)
        pos += size
    return types


def check_init(init_segment: bytes) -> None:
    """Raise `IncompleteVideo` unless `init_segment` is ``ftyp`` … ``moov`` with no media."""
    types = box_types(init_segment, "init segment")
    if not types or types[0] != b"ftyp" or b"moov" not in types or b"moof" in types:
        raise IncompleteVideo(f"init segment has boxes {types}, expected ftyp … moov")


def check_fragment(fragment: bytes, index: int) -> None:
    """Raise `IncompleteVideo` unless `fragment` is ``moof``+``mdat`` pairs."""
    types = box_types(fragment, f"fragment of segment {index}")
    pairs = len(types) // 2
    if not types or len(types) % 2 or types != [b"moof", b"mdat"] * pairs:
        raise IncompleteVideo(f"fragment of segment {index} has boxes {types}, expected moof mdat")


def concatenate(init_segment: bytes, fragments: Iterable[bytes]) -> bytes:
    """One playable MP4: `init_segment` then every fragment in order (bytes)."""
    check_init(init_segment)
    parts = [init_segment]
    for index, fragment in enumerate(fragments):
        check_fragment(fragment, index)
        parts.append(fragment)
    return b"".join(parts)


@dataclass
class Recording:
    """A job's stream collected in memory, checked to be in order with no gap.

    `add` takes the events as they come; `video()` is the concatenated MP4.
    """

    start: StartEvent | None = None
    segments: list[SegmentEvent] = field(default_factory=list)
    complete: CompleteEvent | None = None

    def add(self, event: StreamEvent) -> None:
        """Record `event`; raises `IncompleteVideo` on a segment out of order."""
        if isinstance(event, StartEvent):
            check_init(event.init_segment)
            self.start = event
        elif isinstance(event, SegmentEvent):
            if self.start is None:
                raise IncompleteVideo(f"segment {event.segment_index} came before the start event")
            expected = len(self.segments)
            if event.segment_index != expected:
                raise IncompleteVideo(
                    f"got segment {event.segment_index} where segment {expected} was expected"
                )
            check_fragment(event.fragment, event.segment_index)
            self.segments.append(event)
        elif isinstance(event, CompleteEvent):
            if event.total_segments != len(self.segments):
                raise IncompleteVideo(
                    f"job completed with {event.total_segments} segments "
                    f"but {len(self.segments)} were received"
                )
            self.complete = event

    @property
    def num_frames(self) -> int:
        """Frames received so far."""
        return sum(s.num_frames for s in self.segments)

    def video(self, *, require_complete: bool = True) -> bytes:
        """The concatenated MP4 (init + fragments). With `require_complete`, the job must
        have completed (otherwise the segments so far, still a playable file)."""
        if self.start is None:
            raise IncompleteVideo("no start event: the init segment is missing")
        if require_complete and self.complete is None:
            raise IncompleteVideo(
                f"the job has not completed ({len(self.segments)} segments received)"
            )
        return concatenate(self.start.init_segment, (s.fragment for s in self.segments))


class SegmentWriter:
    """Writes a stream to disk as it arrives (see the module docstring for the files).

    `output_dir` (may be None) gets the per-segment files; `concatenate_to` (may be None)
    gets the one MP4, written to ``<name>.part`` and renamed by `finish`. Events go through
    a `Recording` first, so a gap or a duplicate is refused before anything is written.
    """

    def __init__(self, output_dir: Path | None, concatenate_to: Path | None = None) -> None:
        self.output_dir = output_dir
        self.concatenate_to = concatenate_to
        self.recording = Recording()
        self.paths: list[Path] = []  # files written so far
        self._part: Path | None = None
        self._fd: int | None = None
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
        if concatenate_to is not None:
            concatenate_to.parent.mkdir(parents=True, exist_ok=True)
            self._part = concatenate_to.with_name(concatenate_to.name + ".part")
            self._fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def add(self, event: StreamEvent) -> None:
        """Write what `event` carries (start: the init segment; segment: its two forms)."""
        self.recording.add(event)
        if isinstance(event, StartEvent):
            self._write("init.mp4", event.init_segment)
            self._append(event.init_segment)
        elif isinstance(event, SegmentEvent):
            index = event.segment_index
            self._write(f"fragment_{index:04d}.m4s", event.fragment)
            if event.segment is not None:
                self._write(f"segment_{index:04d}.mp4", event.segment)
            self._append(event.fragment)

    def finish(self, *, require_complete: bool = True) -> Path | None:
        """Close and rename the concatenated file into place; returns its path (or None).

        With `require_complete` (the default) a job that did not complete raises
        `IncompleteVideo` and the ``.part`` file stays, so nothing half-made takes the name.
        """
        if require_complete and self.recording.complete is None:
            raise IncompleteVideo(
                f"the job has not completed ({len(self.recording.segments)} segments received)"
            )
        if self.recording.start is None and self._fd is not None:
            raise IncompleteVideo("no start event: the init segment is missing")
        self._close()
        if self._part is None or self.concatenate_to is None:
            return None
        os.replace(self._part, self.concatenate_to)
        self._part = None
        return self.concatenate_to

    def abort(self) -> None:
        """Close and delete the unfinished concatenated file (segment files stay)."""
        self._close()
        if self._part is not None:
            self._part.unlink(missing_ok=True)
            self._part = None

    def _write(self, name: str, data: bytes) -> None:
        if self.output_dir is None:
            return
        path = self.output_dir / name
        path.write_bytes(data)
        self.paths.append(path)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def save(
    events: Iterable[StreamEvent],
    output_dir: Path | str | None,
    concatenate_to: Path | str | None = None,
) -> Recording:
    """Consume `events` (e.g. ``client.generate(...)``) and write them to disk; returns the
    `Recording`. The concatenated file appears only once the job has completed."""
    writer = SegmentWriter(
        Path(output_dir) if output_dir is not None else None,
        Path(concatenate_to) if concatenate_to is not None else None,
    )
    try:
        for event in events:
            writer.add(event)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return writer.recording
