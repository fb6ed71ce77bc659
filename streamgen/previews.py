"""Still pictures of a finished video (the OpenAI-style ``variant`` of its content): a
thumbnail (its first frame) and a spritesheet (frames spread evenly over its length, in a
grid), both JPEG. Each segment of a streamgen MP4 starts with a keyframe, so a picture from
anywhere in a long video costs one seek and one segment's decoding at most."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import av
from PIL import Image

CONTENT_TYPE = "image/jpeg"
MAX_AT_ONCE = 2  # previews decoded at the same time, whatever the number of requests
_slots = threading.BoundedSemaphore(MAX_AT_ONCE)
SPRITE_TILES = 16
SPRITE_COLUMNS = 4
SPRITE_TILE_WIDTH = 160  # pixels; the height keeps the video's aspect ratio
JPEG_QUALITY = 85


class NoPreview(Exception):
    """The video has no frame to show (or its file went away)."""


def preview(variant: str, path: Path) -> bytes:
    """The `variant` ("thumbnail" or "spritesheet") of the MP4 at `path` (blocking: call it
    off the event loop); `NoPreview` when there is nothing to show."""
    make = thumbnail if variant == "thumbnail" else spritesheet
    with _slots:
        try:
            return make(path)
        except (StopIteration, ValueError, IndexError, OSError, av.FFmpegError) as exc:
            raise NoPreview(str(exc) or type(exc).__name__) from exc


def thumbnail(path: Path) -> bytes:
    """The video's first frame."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return _jpeg(frame.to_image())


def spritesheet(path: Path, tiles: int = SPRITE_TILES, columns: int = SPRITE_COLUMNS) -> bytes:
    """Up to `tiles` frames spread evenly over the video, left to right, top to bottom."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = float(stream.time_base or 1)
        length = float(stream.duration * time_base) if stream.duration else None
        frames: list[Image.Image] = []
        if length:
            for i in range(tiles):
                at = length * i / tiles
                container.seek(int(at / time_base), stream=stream, backward=True)
                frame = next(
                    (f for f in container.decode(stream) if f.time is None or f.time >= at), None
                )
                if frame is not None:
                    frames.append(frame.to_image())
        else:  # no duration in the header: its first frames
            for frame in container.decode(stream):
                frames.append(frame.to_image())
                if len(frames) == tiles:
                    break
    if not frames:
        raise ValueError("the video has no frames")
    width = SPRITE_TILE_WIDTH
    height = max(1, round(frames[0].height * width / frames[0].width))
    rows = -(-len(frames) // columns)
    sheet = Image.new("RGB", (width * min(columns, len(frames)), height * rows))
    for i, image in enumerate(frames):
        tile = image.resize((width, height), Image.Resampling.BILINEAR)
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    return _jpeg(sheet)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
