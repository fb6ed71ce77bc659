"""fMP4 encoding, decoded back with PyAV."""

import io
import struct

import av
import numpy as np
import pytest

from segment_pipeline import EncoderError, FragmentedMP4Encoder, fmp4


def moving_square(frames, start, size=64):
    video = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        x = (start + i) % (size - 16)
        video[i, 24:40, x : x + 16] = (255, 40, 40)
    return video


def decode(data):
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return (
            [f.to_ndarray(format="rgb24") for f in frames],
            [f.time for f in frames],
            [f.key_frame for f in frames],
        )


@pytest.fixture(scope="module")
def encoded():
    enc = FragmentedMP4Encoder(64, 64, 8)
    sizes = [12, 8, 8, 5]
    starts = np.cumsum([0, *sizes[:-1]])
    video = moving_square(sum(sizes), 0)
    fragments = [
        enc.encode(i, video[s : s + n], int(s))
        for i, (s, n) in enumerate(zip(starts, sizes, strict=True))
    ]
    return enc, video, fragments


def test_init_segment_and_codec_string(encoded):
    enc, _, _ = encoded
    types = [b.type for b in fmp4.iter_boxes(enc.init_segment)]
    assert types == [b"ftyp", b"moov"]
    assert fmp4.find_boxes(enc.init_segment, [b"moov", b"mvex"]), "MSE needs mvex"
    assert enc.codec_string.startswith("avc1.") and len(enc.codec_string) == 11
    assert enc.timescale % 8 == 0


def test_each_fragment_starts_with_a_keyframe_and_has_continuous_times(encoded):
    enc, _, fragments = encoded
    for fragment in fragments:
        types = [b.type for b in fmp4.iter_boxes(fragment.fragment)]
        assert types == [b"moof", b"mdat"]  # no mfra
        assert fmp4.decode_times(fragment.fragment) == [fragment.start_frame * enc.ticks_per_frame]
        _, times, keys = decode(enc.init_segment + fragment.fragment)
        assert keys[0] and not any(keys[1:])
        assert times[0] == pytest.approx(fragment.start_frame / 8)


def test_concatenation_is_one_valid_mp4(encoded):
    enc, video, fragments = encoded
    data = enc.init_segment + b"".join(f.fragment for f in fragments)
    frames, times, _ = decode(data)
    assert len(frames) == len(video) == 33
    assert frames[0].shape == (64, 64, 3)
    assert times == pytest.approx([i / 8 for i in range(33)])
    # Lossy, but the square must be where it was drawn.
    error = np.abs(np.stack(frames).astype(int) - video.astype(int)).mean()
    assert error < 6
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / 1e6 == pytest.approx(33 / 8)


def test_standalone_segment_plays_alone_from_zero(encoded):
    _, _, fragments = encoded
    frames, times, keys = decode(fragments[2].standalone)
    assert len(frames) == 8 and times[0] == 0 and keys[0]


def test_wrong_frame_shape_is_an_encoder_error():
    enc = FragmentedMP4Encoder(32, 32, 8)
    with pytest.raises(EncoderError):
        enc.encode(0, np.zeros((2, 16, 16, 3), np.uint8), 0)
    with pytest.raises(EncoderError):
        FragmentedMP4Encoder(33, 32, 8)


def test_retime_shifts_decode_time_and_renumbers():
    enc = FragmentedMP4Encoder(32, 32, 10)
    fragment = enc.encode(0, np.zeros((3, 32, 32, 3), np.uint8), 0).fragment
    moved = fmp4.retime_fragments(fragment, decode_offset=12345, sequence_start=9)
    assert len(moved) == len(fragment)
    assert fmp4.decode_times(moved) == [12345]
    mfhd = fmp4.find_boxes(moved, [b"moof", b"mfhd"])[0]
    assert struct.unpack_from(">I", moved, mfhd.payload_start + 4)[0] == 9


def test_box_parser_rejects_truncated_data():
    with pytest.raises(fmp4.BoxError):
        list(fmp4.iter_boxes(b"\x00\x00\x00\x20moov\x00"))
    with pytest.raises(fmp4.BoxError):
        fmp4.split_init(b"\x00\x00\x00\x08ftyp")
