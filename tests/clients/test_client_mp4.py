"""Saving and concatenating real fMP4 segments (the project's encoder), decoded with PyAV."""

import io
import struct

import av
import numpy as np
import pytest
from streamgen_client.errors import IncompleteVideo
from streamgen_client.events import CompleteEvent, ProgressEvent, SegmentEvent, StartEvent
from streamgen_client.mp4 import (
    Recording,
    SegmentWriter,
    box_types,
    concatenate,
    save,
    top_level_boxes,
)

from segment_pipeline import FragmentedMP4Encoder
from segment_pipeline.fmp4 import iter_boxes

FPS = 8
SIZES = [8, 6, 6]  # frames per segment


def decode(data: bytes) -> tuple[int, tuple[int, int], list[float]]:
    """(frames, (width, height), frame times in seconds)."""
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height), [float(f.time) for f in frames]


@pytest.fixture(scope="module")
def job_events():
    encoder = FragmentedMP4Encoder(64, 48, FPS)
    video = np.zeros((sum(SIZES), 48, 64, 3), np.uint8)
    for i in range(len(video)):
        video[i, 16:32, 2 * i : 2 * i + 16] = (250, 30, 30)
    start = StartEvent(
        job_id="j",
        seq=0,
        codec=encoder.codec_string,
        mime="video/mp4",
        init_segment=encoder.init_segment,
        width=64,
        height=48,
        fps=FPS,
        total_segments=len(SIZES),
        total_frames=sum(SIZES),
        seed=1,
        model="test",
    )
    events: list = [start]
    first = 0
    for index, size in enumerate(SIZES):
        events.append(ProgressEvent(index, 1, 1, len(SIZES), job_id="j", seq=len(events)))
        encoded = encoder.encode(index, video[first : first + size], first)
        events.append(
            SegmentEvent(
                job_id="j",
                seq=len(events),
                segment_index=index,
                total_segments=len(SIZES),
                is_final=index == len(SIZES) - 1,
                start_frame=first,
                num_frames=size,
                start_time=first / FPS,
                end_time=(first + size) / FPS,
                fragment=encoded.fragment,
                segment=encoded.standalone,
                generate_seconds=0.25,
                encode_seconds=encoded.encode_seconds,
            )
        )
        first += size
    events.append(
        CompleteEvent(len(SIZES), sum(SIZES), sum(SIZES) / FPS, job_id="j", seq=len(events))
    )
    return events


def segments(events):
    return [e for e in events if isinstance(e, SegmentEvent)]


def test_concatenation_decodes_to_every_frame_in_order(job_events):
    recording = Recording()
    for event in job_events:
        recording.add(event)
    frames, size, times = decode(recording.video())
    assert frames == sum(SIZES) and size == (64, 48)
    assert times == pytest.approx([i / FPS for i in range(sum(SIZES))])
    assert recording.num_frames == sum(SIZES)


def test_recording_refuses_a_gap_a_duplicate_and_a_short_completion(job_events):
    start, segs, complete = job_events[0], segments(job_events), job_events[-1]
    recording = Recording()
    recording.add(start)
    with pytest.raises(IncompleteVideo, match="got segment 1 where segment 0 was expected"):
        recording.add(segs[1])
    recording.add(segs[0])
    with pytest.raises(IncompleteVideo, match="got segment 0 where segment 1"):
        recording.add(segs[0])
    with pytest.raises(IncompleteVideo, match="has not completed"):
        recording.video()
    assert decode(recording.video(require_complete=False))[0] == SIZES[0]
    with pytest.raises(IncompleteVideo, match="completed with 3 segments but 1"):
        recording.add(complete)


def test_concatenate_checks_the_boxes(job_events):
    start, segs = job_events[0], segments(job_events)
    with pytest.raises(IncompleteVideo, match="init segment"):
        concatenate(segs[0].fragment, [])
    with pytest.raises(IncompleteVideo, match="fragment of segment 1"):
        concatenate(start.init_segment, [segs[0].fragment, start.init_segment])
    with pytest.raises(IncompleteVideo, match="not ISO-BMFF"):
        concatenate(start.init_segment, [segs[0].fragment[:-3]])


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_box_reader_agrees_with_the_encoder_side_reader(job_events):
    for data in (job_events[0].init_segment, *(s.fragment for s in segments(job_events))):
        assert top_level_boxes(data) == [b.type for b in iter_boxes(data)]


def test_box_reader_takes_64_bit_sizes_and_size_0_to_the_end():
    moof = box(b"moof", box(b"mfhd", bytes(8)))
    mdat64 = struct.pack(">I4sQ", 1, b"mdat", 16 + 5) + b"video"
    mdat_to_end = struct.pack(">I4s", 0, b"mdat") + b"more video"
    fragment = moof + mdat64 + moof + mdat_to_end
    assert top_level_boxes(fragment) == [b"moof", b"mdat", b"moof", b"mdat"]
    init = box(b"ftyp", b"isom") + box(b"moov", b"")
    assert concatenate(init, [fragment]) == init + fragment


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (box(b"ftyp", b"isom") + b"\x00\x00\x00", "truncated box header at offset 12"),
        (struct.pack(">I4sI", 1, b"mdat", 0), "truncated 64-bit box header at offset 0"),
        (struct.pack(">I4s", 4, b"moof"), "box b'moof' at offset 0 is 4 bytes, under its header"),
        (
            struct.pack(">I4sQ", 1, b"mdat", 12),
            "box b'mdat' at offset 0 is 12 bytes, under its header",
        ),
        (box(b"moof", bytes(4))[:-1], "box b'moof' at offset 0 overruns the data (12 bytes)"),
    ],
)
def test_malformed_boxes_are_incomplete_video(data, detail):
    with pytest.raises(IncompleteVideo) as info:
        box_types(data, "fragment of segment 2")
    assert str(info.value) == f"fragment of segment 2 is not ISO-BMFF boxes: {detail}"


def test_save_writes_every_file_and_each_segment_plays_alone(job_events, tmp_path):
    out = tmp_path / "video" / "out.mp4"
    save(iter(job_events), tmp_path / "segs", concatenate_to=out)
    names = sorted(p.name for p in (tmp_path / "segs").iterdir())
    assert names == [
        "fragment_0000.m4s",
        "fragment_0001.m4s",
        "fragment_0002.m4s",
        "init.mp4",
        "segment_0000.mp4",
        "segment_0001.mp4",
        "segment_0002.mp4",
    ]
    assert decode(out.read_bytes())[:2] == (sum(SIZES), (64, 48))
    assert not out.with_name("out.mp4.part").exists()
    for index, size in enumerate(SIZES):
        frames, _, times = decode((tmp_path / "segs" / f"segment_{index:04d}.mp4").read_bytes())
        assert frames == size and times[0] == 0.0  # self-contained: starts at time 0
    init = (tmp_path / "segs" / "init.mp4").read_bytes()
    joined = init + b"".join(
        (tmp_path / "segs" / f"fragment_{i:04d}.m4s").read_bytes() for i in range(len(SIZES))
    )
    assert joined == out.read_bytes()


def test_an_unfinished_job_leaves_no_concatenated_file(job_events, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(IncompleteVideo, match="has not completed"):
        save(iter(job_events[:-1]), None, concatenate_to=out)
    assert list(tmp_path.iterdir()) == []


def test_stopping_an_unbounded_stream_keeps_a_playable_file(job_events, tmp_path):
    out = tmp_path / "out.mp4"
    writer = SegmentWriter(None, out)
    for event in job_events[:4]:  # start, progress, segment 0, progress
        writer.add(event)
    assert writer.finish(require_complete=False) == out
    assert decode(out.read_bytes())[0] == SIZES[0]
