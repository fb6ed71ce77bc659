"""`streamgen-client`: stream a job from a streamgen server and save its video.

    streamgen-client --prompt "a red ball moving right" --seconds 2 \\
        --transport ws --output-dir segments/ --concatenate out.mp4

Starts a job (or attaches to one with ``--job ID``), saves every segment as it arrives
(``init.mp4``, ``fragment_NNNN.m4s``, self-contained ``segment_NNNN.mp4``) and, with
``--concatenate``, writes the one playable MP4 (init + fragments, byte-concatenated). A
dropped connection is resumed where it broke off. Exit status: 0 done; 1 connection or
protocol failure; 2 bad arguments, a request the server refused, or a failed job; 130
interrupted (in ``--unbounded`` mode Ctrl-C is the way to stop: the segments received so
far are kept and the status is 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .client import TRANSPORTS, EventStream, RetryPolicy, StreamClient
from .errors import ClientError, IncompleteVideo, JobFailed, RequestRejected
from .events import (
    CompleteEvent,
    ProgressEvent,
    QueuedEvent,
    SegmentEvent,
    StartEvent,
    StreamEvent,
)
from .mp4 import SegmentWriter
from .request import GenerateRequest, read_file

DEFAULT_SERVER = "http://127.0.0.1:8000"
PROG = "streamgen-client"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Stream a generated video from a streamgen server, segment by segment, "
        "and save it.",
    )
    p.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"server URL (default {DEFAULT_SERVER})"
    )
    p.add_argument("--transport", choices=TRANSPORTS, default="sse", help="wire transport")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="what the video shows (starts a new job)")
    what.add_argument("--job", metavar="ID", help="attach to an existing job instead")
    p.add_argument(
        "--detach",
        action="store_true",
        help="queue the job with POST /v1/jobs so it runs even if this client goes away, "
        "then follow it (re-attach later with --job)",
    )
    p.add_argument("--negative-prompt")
    duration = p.add_mutually_exclusive_group()
    duration.add_argument("--seconds", type=float, help="video length (seconds)")
    duration.add_argument("--num-frames", type=int, help="video length (frames)")
    duration.add_argument("--unbounded", action="store_true", help="generate until Ctrl-C")
    p.add_argument("--width", type=int, help="pixels")
    p.add_argument("--height", type=int, help="pixels")
    p.add_argument(
        "--size", help="WIDTHxHEIGHT in pixels (e.g. 1280x720) or a preset (480p, 540p, "
        "720p, 1080p); the server rounds it to a size its model makes",
    )  # fmt: skip
    p.add_argument("--fps", type=float, help="frames per second")
    p.add_argument("--steps", type=int, dest="num_inference_steps", help="denoising steps")
    p.add_argument("--seed", type=int, help="noise seed")
    p.add_argument("--segment-frames", type=int, help="frames per generated segment")
    p.add_argument("--overlap-frames", type=int, help="frames each segment is conditioned on")
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--reference-image", type=Path, help="image file that becomes frame 0")
    p.add_argument("--extend-video", type=Path, help="video file whose end the output continues")
    p.add_argument("--video", type=Path, help="video file transformed into one of its length")
    p.add_argument("--strength", type=float, help="with --video: how much is re-made, (0, 1]")
    p.add_argument(
        "--audio", type=Path, help="audio file (WAV, MP3, AAC, FLAC…): the video's sound track"
    )
    p.add_argument(
        "--audio-scale", type=float, help="how strongly a model that follows audio follows it"
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        help="where to save init.mp4, fragment_NNNN.m4s and segment_NNNN.mp4 "
        "(default: ./<job id>/ unless only --concatenate is given)",
    )
    p.add_argument("--concatenate", type=Path, metavar="OUT.mp4", help="write one playable MP4")
    p.add_argument("--retries", type=int, default=5, help="reconnects in a row before giving up")
    p.add_argument("--retry-delay", type=float, default=0.5, help="first backoff (seconds)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.server.startswith(("http://", "https://")):
        parser.error(f"--server must start with http:// or https://, got {args.server!r}")
    try:
        request = _request(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    retry = RetryPolicy(
        max_retries=max(0, args.retries), initial_delay_s=max(0.0, args.retry_delay)
    )
    with StreamClient(args.server, retry=retry) as client:
        try:
            if request is None:
                stream = client.attach(args.job, transport=args.transport)
            elif args.detach:
                job_id = client.submit(request)
                print(f"{PROG}: queued job {job_id}", file=sys.stderr)
                stream = client.attach(job_id, transport=args.transport)
            else:
                stream = client.generate(request, transport=args.transport)
        except ClientError as exc:
            return _fail(exc, None)
        return _run(stream, args)


def _request(args: argparse.Namespace) -> GenerateRequest | None:
    if args.job is not None:
        return None
    if args.size is not None and (args.width is not None or args.height is not None):
        raise ValueError("give --size or --width/--height, not both")
    return GenerateRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        width=args.width,
        height=args.height,
        size=args.size,
        fps=args.fps,
        seconds=args.seconds,
        num_frames=args.num_frames,
        unbounded=args.unbounded,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        segment_frames=args.segment_frames,
        overlap_frames=args.overlap_frames,
        reference_image=read_file(args.reference_image) if args.reference_image else None,
        extend_video=read_file(args.extend_video) if args.extend_video else None,
        video=read_file(args.video) if args.video else None,
        strength=args.strength,
        audio=read_file(args.audio) if args.audio else None,
        audio_scale=args.audio_scale,
    )


def _run(stream: EventStream, args: argparse.Namespace) -> int:
    """Consume `stream`, save it, print a summary; returns the exit status."""
    progress = _Progress(enabled=not args.quiet)
    writer: SegmentWriter | None = None
    stopped = False
    try:
        try:
            for event in stream:
                if isinstance(event, StartEvent) and writer is None:
                    writer = _writer(args, event.job_id)
                if writer is None:
                    raise IncompleteVideo("the stream did not begin with a `start` event")
                with _deferred_interrupt():  # never leave a segment half-written
                    writer.add(event)
                progress.show(event)
        except KeyboardInterrupt:
            stream.close()
            stopped = True
        finally:
            progress.close()
        if stopped and not (args.unbounded and writer is not None and writer.recording.segments):
            if writer is not None:
                writer.abort()
            print(f"{PROG}: interrupted{_still_running(stream, args)}", file=sys.stderr)
            return 130
        assert writer is not None  # without a stop, the loop ends only after `complete`
        path = writer.finish(require_complete=not stopped)
    except ClientError as exc:
        if writer is not None:
            writer.abort()
        return _fail(exc, stream)
    _summary(writer, path, stream)
    return 0


@contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block and raise it once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if caught:
        raise KeyboardInterrupt


class _Progress:
    """A tqdm bar on stderr, over segments, made when the job's size is known."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def show(self, event: StreamEvent) -> None:
        if not self.enabled:
            return
        if isinstance(event, StartEvent):
            from tqdm import tqdm

            self.bar = tqdm(
                total=event.total_segments,
                unit="segment",
                desc=f"job {event.job_id}",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        elif self.bar is None:
            return
        elif isinstance(event, QueuedEvent):
            wait = event.estimated_wait_seconds
            self.bar.set_postfix_str(
                "queued" + ("" if wait is None else f", starts in about {wait:.0f} s")
            )
        elif isinstance(event, ProgressEvent):
            step = f"segment {event.segment_index + 1} step {event.step}/{event.total_steps}"
            self.bar.set_postfix_str(step)
        elif isinstance(event, SegmentEvent):
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _still_running(stream: EventStream, args: argparse.Namespace) -> str:
    """A hint when the job outlives this client (it was queued, not request-scoped)."""
    if stream.job_id and (args.detach or args.job):
        return f"; job {stream.job_id} keeps running: re-attach with --job {stream.job_id}"
    return ""


def _writer(args: argparse.Namespace, job_id: str) -> SegmentWriter:
    output_dir: Path | None = args.output_dir
    if output_dir is None and args.concatenate is None:
        output_dir = Path(job_id)
    return SegmentWriter(output_dir, args.concatenate)


def _summary(writer: SegmentWriter, path: Path | None, stream: EventStream) -> None:
    recording = writer.recording
    complete: CompleteEvent | None = recording.complete
    start = recording.start
    fps = start.fps if start is not None else 0.0
    seconds = recording.num_frames / fps if fps else 0.0
    state = "complete" if complete is not None else "stopped"
    parts = [
        f"job {stream.job_id} {state}: {len(recording.segments)} segments, "
        f"{recording.num_frames} frames, {seconds:.2f} s"
    ]
    if writer.output_dir is not None:
        parts.append(f"segments in {writer.output_dir}/")
    if path is not None:
        parts.append(f"video {path}")
    if stream.reconnects:
        parts.append(f"resumed {stream.reconnects}x")
    print("; ".join(parts))


def _fail(exc: ClientError, stream: EventStream | None) -> int:
    if isinstance(exc, RequestRejected):
        where = f", parameter {exc.param}" if exc.param else ""
        print(
            f"{PROG}: the server rejected the request ({_status(exc.status)} {exc.code}{where}): "
            f"{exc.message}",
            file=sys.stderr,
        )
        return 2
    if isinstance(exc, JobFailed):
        where = f", parameter {exc.param}" if exc.param else ""
        print(
            f"{PROG}: job {exc.job_id} failed ({exc.code}{where}): {exc.message}", file=sys.stderr
        )
        return 2
    job = ""
    if stream is not None and stream.job_id:
        job = f" (job {stream.job_id}, last event {stream.last_seq})"
    print(f"{PROG}: {exc}{job}", file=sys.stderr)
    return 1


def _status(status: int) -> str:
    if status >= 1000:
        return f"WebSocket close {status}"
    return f"HTTP {status}" if status else "handshake"


if __name__ == "__main__":
    sys.exit(main())
