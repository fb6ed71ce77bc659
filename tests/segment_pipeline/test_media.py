"""Reading a request's pictures (`segment_pipeline.media`): header caps before decoding, only
the tail of a video kept, and messages that name the field without memory addresses."""

from __future__ import annotations

import io
import struct
import zlib

import av
import numpy as np
import pytest

from segment_pipeline import InvalidRequest, MediaLimits, read_image, read_video_tail


def numbered_video(frames: int, *, gop: int, size: int = 64) -> bytes:
    """An H.264 MP4 whose frame i is flat grey level 4*i (so each decoded frame is known)."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0", "g": str(gop), "bf": "0"}
        for i in range(frames):
            pixels = np.full((size, size, 3), 4 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` over a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1 + 3 * 16))  # one short row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("gop", [5, 1000], ids=["seeks-to-a-keyframe", "one-keyframe"])
def test_the_tail_is_the_last_frames_of_a_full_decode(gop: int) -> None:
    data = numbered_video(60, gop=gop)
    tail = read_video_tail(data, overlap_frames=3)
    whole = read_video_tail(data)
    assert tail.shape == (3, 64, 64, 3)
    assert len(whole) == 60
    np.testing.assert_array_equal(tail, whole[-3:])
    assert [round(float(frame.mean()) / 4) for frame in tail] == [57, 58, 59]


def test_a_short_video_gives_all_its_frames() -> None:
    frames = read_video_tail(numbered_video(2, gop=5), overlap_frames=4)
    assert [round(float(frame.mean()) / 4) for frame in frames] == [0, 1]


def test_video_caps_are_checked_from_the_header() -> None:
    data = numbered_video(30, gop=5)
    with pytest.raises(InvalidRequest, match="30 frames; the cap is 20") as too_long:
        read_video_tail(data, overlap_frames=2, limits=MediaLimits(max_frames=20))
    assert too_long.value.param == "extend_video"
    with pytest.raises(InvalidRequest, match="64x64") as too_big:
        read_video_tail(data, overlap_frames=2, limits=MediaLimits(max_pixels=63 * 63))
    assert too_big.value.param == "extend_video"
    with pytest.raises(InvalidRequest, match="bytes; the cap"):
        read_video_tail(data, overlap_frames=2, limits=MediaLimits(max_bytes=len(data) - 1))
    # Frames kept x their size: a client's large overlap cannot make it hold gigabytes.
    budget = MediaLimits(max_kept_bytes=10 * 64 * 64 * 3)
    assert len(read_video_tail(data, overlap_frames=10, limits=budget)) == 10
    with pytest.raises(InvalidRequest, match="fewer overlap frames"):
        read_video_tail(data, overlap_frames=11, limits=budget)


def test_an_image_that_claims_a_huge_picture_is_refused_before_decoding() -> None:
    for side in (12_000, 20_000):  # under and over Pillow's own bomb check
        with pytest.raises(InvalidRequest, match="cap") as caught:
            read_image(png_claiming(side, side))
        assert caught.value.param == "reference_image"


def test_unreadable_media_messages_name_the_field_and_no_address() -> None:
    for read, param in ((read_image, "reference_image"), (read_video_tail, "extend_video")):
        with pytest.raises(InvalidRequest) as caught:
            read(b"not a picture at all")
        assert caught.value.param == param
        assert param in caught.value.message
        assert "at 0x" not in caught.value.message
