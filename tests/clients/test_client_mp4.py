"""Saving and concatenating real fMP4 segments (the project's encoder), decoded with PyAV."""

import io

import av
import numpy as np
import pytest

from clients.errors import IncompleteVideo
from clients.events import CompleteEvent, ProgressEvent, SegmentEvent, StartEvent
from clients.mp4 import Recording, SegmentWriter, concatenate, save
from segment_pipeline import FragmentedMP4Encoder

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
        events.append(ProgressEvent("j", len(events), index, 1, 1, len(SIZES)))
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
                generate_seconds=None,
                encode_seconds=encoded.encode_seconds,
            )
        )
        first += size
    events.append(CompleteEvent("j", len(events), len(SIZES), sum(SIZES), sum(SIZES) / FPS))
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
