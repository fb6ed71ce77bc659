"""How an `EventStream` orders what its connections deliver (no connection is opened):
replays are skipped, a gap is an error, `start` may be re-sent ahead of a resumed log."""

import pytest
from streamgen_client import JobFailed, ProtocolError, StreamClient
from streamgen_client._transports import Dropped
from streamgen_client.events import CompleteEvent, ErrorEvent, ProgressEvent, StartEvent

START = StartEvent(
    "avc1.64000a", "video/mp4", b"init", 64, 64, 8.0, 1, 8, 1, "m", job_id="j", seq=0
)


def progress(seq: int, job_id: str = "j") -> ProgressEvent:
    return ProgressEvent(0, seq, 8, 1, job_id=job_id, seq=seq)


@pytest.fixture
def stream():
    with StreamClient("http://127.0.0.1:9") as client:  # never connected in these tests
        yield client.attach("j")


def test_in_order_events_pass_and_replays_are_skipped(stream):
    assert [stream._accept(e) for e in (START, progress(1), progress(2))] == [True] * 3
    assert stream.last_seq == 2
    assert not stream._accept(progress(1))  # a resumed connection replaying seq 1
    assert not stream._accept(START)  # `start` again, already seen
    assert stream._accept(progress(3)) and stream.last_seq == 3


def test_a_gap_is_a_protocol_error(stream):
    stream._accept(START)
    with pytest.raises(ProtocolError, match=r"events 1\.\.2 of job j are missing"):
        stream._accept(progress(3))


def test_start_ahead_of_a_log_resumed_past_it_passes_once():
    with StreamClient("http://127.0.0.1:9") as client:
        stream = client.attach("j", from_seq=5)
        assert stream._accept(START) and not stream._accept(START)
        assert not stream._accept(progress(4))
        assert stream._accept(progress(5))


def test_an_event_of_another_job_is_refused(stream):
    with pytest.raises(ProtocolError, match="event of job k on job j"):
        stream._accept(progress(0, job_id="k"))


def test_slow_consumer_resumes_and_a_job_error_fails(stream):
    stream._accept(START)
    with pytest.raises(Dropped, match="cut this subscriber off"):
        stream._accept(ErrorEvent("slow_consumer", "behind", None, resume_from=1, job_id="j"))
    with pytest.raises(JobFailed, match="cancelled") as failed:
        stream._accept(ErrorEvent("cancelled", "the job was cancelled", job_id="j", seq=1))
    assert failed.value.job_id == "j"
    assert (
        stream._accept(CompleteEvent(1, 8, 1.0, job_id="j", seq=2)) is True
    )  # seq 1 was the error
