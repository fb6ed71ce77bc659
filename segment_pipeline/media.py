"""Reading a request's pictures: a reference image, the end of a video to extend, and a
video to transform.

Both are checked by their headers (pixels a frame, frames, bytes) against `MediaLimits`
before anything is decoded, so a small file that claims a huge picture costs nothing. Of a
video only its last frames are kept (`overlap_frames`, the frames a request's first segment
conditions on): the decoder starts at the keyframe before them when the container can seek,
and never holds more than `overlap_frames` decoded frames. Every failure is an
`InvalidRequest` naming the field, with a message that says what is wrong with the file
(never where it sits in memory).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .errors import InvalidRequest

Source = bytes | str | Path  # a file's bytes, or its path
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class MediaLimits:
    """Caps on a request's pictures, checked from headers before decoding."""

    max_pixels: int = 4096 * 4096  # width x height of an image or of one video frame
    max_frames: int = 1800  # frames in a video to extend
    max_bytes: int = 64 * 1024 * 1024  # bytes of one file
    max_kept_bytes: int = 512 * 1024 * 1024  # decoded RGB a video's kept frames may take


def read_image(
    source: Source, param: str = "reference_image", limits: MediaLimits | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (any format Pillow reads)."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or MediaLimits()
    _check_bytes(source, param, limits)
    try:
        with warnings.catch_warnings():  # our own cap comes next; Pillow's warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(_open(source))
        with image:
            _check_pixels(*image.size, param=param, limits=limits)
            return np.asarray(image.convert("RGB"))
    except InvalidRequest:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap, checked as it opens
        raise InvalidRequest(
            f"{param} is larger than the cap of {limits.max_pixels} pixels", param=param
        ) from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InvalidRequest(f"{param} is not a readable image ({_why(exc)})", param=param) from exc


def read_video(
    source: Source, param: str = "video", limits: MediaLimits | None = None
) -> np.ndarray:
    """Every frame of a video file (a video to transform) as (T, H, W, 3) uint8 RGB, within
    `limits` (frames, and the bytes they take decoded)."""
    return read_video_tail(source, param, None, limits)


def read_video_tail(
    source: Source,
    param: str = "extend_video",
    overlap_frames: int | None = None,
    limits: MediaLimits | None = None,
) -> np.ndarray:
    """The last `overlap_frames` frames (all when None) of a video file as (T, H, W, 3)
    uint8 RGB."""
    limits = limits or MediaLimits()
    _check_bytes(source, param, limits)
    if overlap_frames is not None and overlap_frames < 1:
        raise InvalidRequest(
            f"{param}: condition on at least one frame, got overlap_frames={overlap_frames}",
            param=param,
        )
    try:
        with av.open(_open(source), mode="r") as container:
            if not container.streams.video:
                raise InvalidRequest(f"{param} has no video stream", param=param)
            stream = container.streams.video[0]
            _check_pixels(stream.width, stream.height, param=param, limits=limits)
            header_frames = _header_frames(container, stream)
            if header_frames is not None and header_frames > limits.max_frames:
                raise InvalidRequest(
                    f"{param} has {header_frames} frames; the cap is {limits.max_frames}",
                    param=param,
                )
            kept = min(overlap_frames or limits.max_frames, header_frames or limits.max_frames)
            if kept * stream.width * stream.height * 3 > limits.max_kept_bytes:
                raise InvalidRequest(
                    f"{param}: keeping {kept} frames of {stream.width}x{stream.height} would "
                    f"take over {limits.max_kept_bytes // 2**20} MiB; ask for fewer overlap "
                    "frames or send a smaller video",
                    param=param,
                )
            frames = _tail(container, stream, overlap_frames, header_frames, param, limits)
    except InvalidRequest:
        raise
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise InvalidRequest(f"{param} is not a readable video ({_why(exc)})", param=param) from exc
    if not frames:
        raise InvalidRequest(f"{param} has no video frames", param=param)
    return np.stack([frame.to_ndarray(format="rgb24") for frame in frames])


def _tail(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    overlap_frames: int | None,
    header_frames: int | None,
    param: str,
    limits: MediaLimits,
) -> list[av.VideoFrame]:
    """The last `overlap_frames` decoded frames: from the keyframe before them when the
    header says where they are, else (or when that seek falls short) from the start."""
    if (
        overlap_frames is not None
        and header_frames is not None
        and header_frames > 2 * overlap_frames
    ):
        seconds = header_seconds(container, stream)
        if seconds is not None and stream.time_base is not None and stream.average_rate:
            # A frame early, so rounding of the header's duration cannot skip one.
            back = (overlap_frames + 1) / float(stream.average_rate)
            target = int(max(0.0, seconds - back) / float(stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            frames = _decode(container, stream, overlap_frames, param, limits)
            if len(frames) == overlap_frames:
                return frames
            container.seek(0, stream=stream, backward=True, any_frame=False)
    return _decode(container, stream, overlap_frames, param, limits)


def _decode(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    overlap_frames: int | None,
    param: str,
    limits: MediaLimits,
) -> list[av.VideoFrame]:
    frames: deque[av.VideoFrame] = deque(maxlen=overlap_frames)
    for count, frame in enumerate(container.decode(stream), start=1):
        if count > limits.max_frames:  # a header that left the count out, or lied
            raise InvalidRequest(
                f"{param} has more than {limits.max_frames} frames, the cap", param=param
            )
        if (frame.width, frame.height) != (stream.width, stream.height):
            _check_pixels(frame.width, frame.height, param=param, limits=limits)
        frames.append(frame)
    return list(frames)


def _header_frames(container: av.container.InputContainer, stream: av.VideoStream) -> int | None:
    """Frames the header claims: its count, else its duration times its rate."""
    if stream.frames:
        return int(stream.frames)
    seconds = header_seconds(container, stream)
    if seconds is not None and stream.average_rate:
        return math.ceil(seconds * float(stream.average_rate))
    return None


def header_seconds(
    container: av.container.InputContainer, stream: av.stream.Stream
) -> float | None:
    """How long the header says `stream` lasts (its own duration, else the container's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _check_pixels(width: int, height: int, *, param: str, limits: MediaLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"{param} has no picture size in its header", param=param)
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            f"{param} is {width}x{height} ({width * height} pixels); the cap is "
            f"{limits.max_pixels} pixels",
            param=param,
        )


def _check_bytes(source: Source, param: str, limits: MediaLimits) -> None:
    size = len(source) if isinstance(source, bytes) else _file_size(source, param)
    if size > limits.max_bytes:
        raise InvalidRequest(f"{param} is {size} bytes; the cap is {limits.max_bytes}", param=param)


def _file_size(path: str | Path, param: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read {param} {str(path)!r}: {_why(exc)}", param=param
        ) from exc


def _open(source: Source) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _why(exc: BaseException) -> str:
    """What went wrong, in the library's words, without object reprs (memory addresses)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return text or type(exc).__name__
