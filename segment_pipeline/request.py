"""The generation request: what a caller asks for, and the fully resolved form a backend runs.

`GenerationRequest` leaves backend-dependent fields as ``None``; `resolve` fills them from the
backend's `GeneratorDefaults`, checks them against the service's `Limits` and returns a
`ResolvedRequest` in which every number is concrete. Every check raises `InvalidRequest`
naming the parameter, so a caller can point the user at the field to fix.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE, AudioClip
from .errors import InvalidRequest
from .sizes import SizeRule

MAX_SEED = 2**63 - 1  # a seed is a signed 64-bit integer everywhere it is stored
V2V_STRENGTH = 0.8  # how much of a `video` is re-made when `strength` is left out (diffusers')


@dataclass(frozen=True)
class Limits:
    """Service-wide caps on what one request may ask for."""

    max_width: int = 1920  # pixels: 1920x1080 and 1024x1792 fit
    max_height: int = 1920
    max_pixels: int = 1920 * 1088  # width * height: 1080p at a multiple of 32
    max_frames: int = 100_000
    min_fps: float = 1.0  # below it a video's timing loses its precision
    max_fps: float = 60.0
    max_inference_steps: int = 200
    max_prompt_chars: int = 2000


@dataclass(frozen=True)
class GeneratorDefaults:
    """A backend's defaults for the fields a request may leave out."""

    width: int = 128
    height: int = 128
    fps: float = 8.0
    seconds: float = 4.0
    num_inference_steps: int = 8
    guidance_scale: float = 1.0
    segment_frames: int = 12
    overlap_frames: int = 4


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for. ``None`` means "the backend's default".

    Duration is given by exactly one of `num_frames` (frames), `seconds`, or `unbounded`
    (segments until cancelled). `reference_image` is (H, W, 3) uint8 and becomes frame 0;
    `extend_video` is (T, H, W, 3) uint8 and the output continues from its last frame.
    `video` is (T, H, W, 3) uint8 transformed segment by segment into a video of its length
    (video to video); `strength` in (0, 1] is how much of it is re-made (1: all of it).
    """

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    seconds: float | None = None
    num_frames: int | None = None
    unbounded: bool = False
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    segment_frames: int | None = None
    overlap_frames: int | None = None
    reference_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    extend_video: np.ndarray | None = field(default=None, repr=False, compare=False)
    audio: AudioClip | None = field(default=None, repr=False, compare=False)
    audio_scale: float | None = None  # how strongly an audio-driven backend follows it
    video: np.ndarray | None = field(default=None, repr=False, compare=False)
    strength: float | None = None  # with `video` only


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every field concrete and checked; what backends consume."""

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    fps: float
    total_frames: int | None  # None: unbounded
    num_inference_steps: int
    guidance_scale: float
    segment_frames: int
    overlap_frames: int
    reference_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    extend_video: np.ndarray | None = field(default=None, repr=False, compare=False)
    audio: AudioClip | None = field(default=None, repr=False, compare=False)  # at SAMPLE_RATE
    audio_scale: float = 1.0
    video: np.ndarray | None = field(default=None, repr=False, compare=False)  # at width x height
    strength: float = V2V_STRENGTH  # how much of `video` is re-made; unused without it

    @property
    def seconds(self) -> float | None:
        """Total duration in seconds, or None when unbounded."""
        return None if self.total_frames is None else self.total_frames / self.fps

    @property
    def first_given_frames(self) -> int:
        """Frames given to segment 0 as conditioning (reference image or extended video)."""
        if self.extend_video is not None:
            return min(self.overlap_frames, len(self.extend_video))
        return 1 if self.reference_image is not None else 0

    @property
    def first_emits_given(self) -> bool:
        """A reference image is frame 0 of the output; an extended video's frames are not."""
        return self.extend_video is None

    def frames_emitted_by(self, index: int) -> int:
        """New frames segment `index` adds to the output when not trimmed (frames)."""
        if index == 0:
            skipped = 0 if self.first_emits_given else self.first_given_frames
            return self.segment_frames - skipped
        return self.segment_frames - self.overlap_frames

    @property
    def total_segments(self) -> int | None:
        """Number of segments, or None when unbounded."""
        if self.total_frames is None:
            return None
        remaining = self.total_frames - self.frames_emitted_by(0)
        if remaining <= 0:
            return 1
        return 1 + math.ceil(remaining / self.frames_emitted_by(1))

    def window_start(self, index: int) -> int:
        """Where window `index` starts in the output video (frames; negative for the frames
        of a video being extended): the frames before it, less its given frames."""
        if index == 0:
            return -(0 if self.first_emits_given else self.first_given_frames)
        before = self.frames_emitted_by(0) + (index - 1) * self.frames_emitted_by(1)
        return before - self.overlap_frames


def _positive_int(
    value: object, param: str, *, minimum: int = 1, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequest(f"{param} must be an integer, got {value!r}", param=param)
    if value < minimum:
        raise InvalidRequest(f"{param} must be at least {minimum}, got {value}", param=param)
    if maximum is not None and value > maximum:
        raise InvalidRequest(f"{param} must be at most {maximum}, got {value}", param=param)
    return int(value)


def _positive_float(value: object, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InvalidRequest(f"{param} must be a number, got {value!r}", param=param)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise InvalidRequest(f"{param} must be a positive number, got {value}", param=param)
    return number


def _check_image(image: np.ndarray, param: str, width: int, height: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape[-1:] != (3,):
        raise InvalidRequest(f"{param} must be uint8 RGB pixels (..., H, W, 3)", param=param)
    if image.shape[-3:-1] != (height, width):
        image = resize_frames(image, width, height)
    return image


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (H, W, 3) or (T, H, W, 3) uint8 frames to `width` x `height` (bilinear)."""
    from PIL import Image

    single = frames.ndim == 3
    stack = frames[None] if single else frames
    out = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
            for f in stack
        ]
    )
    return out[0] if single else out


def _check_prompt(prompt: object, limits: Limits) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt must be a non-empty string", param="prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}",
            param="prompt",
        )


def remix(source: ResolvedRequest, prompt: str, limits: Limits) -> ResolvedRequest:
    """`source` with a new `prompt`: every setting and the seed as resolved for it (so
    nothing falls back to a default), without its inputs (reference image, video to
    extend or to transform, audio), which belonged to the old prompt. Raises
    `InvalidRequest`."""
    _check_prompt(prompt, limits)
    return dataclasses.replace(
        source, prompt=prompt, reference_image=None, extend_video=None, audio=None, video=None
    )


def resolve(
    request: GenerationRequest,
    defaults: GeneratorDefaults,
    limits: Limits,
    sizes: SizeRule | None = None,
    model: str = "this model",
    *,
    keeps_stream_state: bool = False,
) -> ResolvedRequest:
    """Fill `request`'s defaults and check every field; raises `InvalidRequest`. The size
    is rounded to the nearest one `sizes` (the model's rule; by default even sides under
    `limits`) allows, and over its caps is refused naming the largest allowed.
    `keeps_stream_state`: the backend continues from state it keeps (built from the video
    to extend itself), so extending needs no overlap frames."""
    _check_prompt(request.prompt, limits)
    width = _positive_int(request.width if request.width is not None else defaults.width, "width")
    height = _positive_int(
        request.height if request.height is not None else defaults.height, "height"
    )
    if sizes is None:
        sizes = SizeRule(
            max_width=limits.max_width // 2 * 2,
            max_height=limits.max_height // 2 * 2,
            max_pixels=limits.max_pixels,
        )
    width, height = sizes.fit(width, height, model)
    fps = _positive_float(request.fps if request.fps is not None else defaults.fps, "fps")
    if fps > limits.max_fps:
        raise InvalidRequest(f"fps {fps} is over the cap of {limits.max_fps}", param="fps")
    if fps < limits.min_fps:
        raise InvalidRequest(f"fps {fps} is under the minimum of {limits.min_fps}", param="fps")

    audio = request.audio
    if audio is not None:
        if not isinstance(audio, AudioClip) or audio.channels not in (1, 2):
            raise InvalidRequest("audio must be a mono or stereo clip", param="audio")
        audio = audio.resampled(SAMPLE_RATE)
    audio_scale = 1.0 if request.audio_scale is None else request.audio_scale
    if isinstance(audio_scale, bool) or not isinstance(audio_scale, int | float):
        raise InvalidRequest(
            f"audio_scale must be a number, got {audio_scale!r}", param="audio_scale"
        )
    if not math.isfinite(audio_scale) or audio_scale < 0:
        raise InvalidRequest(f"audio_scale must be >= 0, got {audio_scale}", param="audio_scale")

    video = _check_video(request, width, height)
    strength = _check_strength(request.strength, video)
    total_frames = _total_frames(request, defaults, fps, limits, audio)
    if video is not None:
        total_frames = _video_frames(request, video, total_frames)
    steps = _positive_int(
        request.num_inference_steps
        if request.num_inference_steps is not None
        else defaults.num_inference_steps,
        "num_inference_steps",
    )
    if steps > limits.max_inference_steps:
        raise InvalidRequest(
            f"num_inference_steps {steps} is over the cap of {limits.max_inference_steps}",
            param="num_inference_steps",
        )
    guidance = (
        request.guidance_scale if request.guidance_scale is not None else defaults.guidance_scale
    )
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, int | float)
        or not math.isfinite(guidance)
        or guidance < 0
    ):
        raise InvalidRequest(
            f"guidance_scale must be a finite number >= 0, got {guidance!r}",
            param="guidance_scale",
        )
    segment_frames = _positive_int(
        request.segment_frames if request.segment_frames is not None else defaults.segment_frames,
        "segment_frames",
        minimum=2,
    )
    overlap = _positive_int(
        request.overlap_frames if request.overlap_frames is not None else defaults.overlap_frames,
        "overlap_frames",
        minimum=0,
    )
    if overlap >= segment_frames:
        raise InvalidRequest(
            f"overlap_frames ({overlap}) must be less than segment_frames ({segment_frames})",
            param="overlap_frames",
        )
    seed = request.seed if request.seed is not None else random.randrange(2**31)
    seed = _positive_int(seed, "seed", minimum=0, maximum=MAX_SEED)

    reference = request.reference_image
    extend = request.extend_video
    if reference is not None and extend is not None:
        raise InvalidRequest(
            "give either reference_image or extend_video, not both", param="reference_image"
        )
    if reference is not None:
        reference = _check_image(reference, "reference_image", width, height)
        if reference.ndim != 3:
            raise InvalidRequest(
                "reference_image must be one (H, W, 3) image", param="reference_image"
            )
    if extend is not None:
        extend = _check_image(extend, "extend_video", width, height)
        if extend.ndim != 4 or len(extend) == 0:
            raise InvalidRequest("extend_video must hold at least one frame", param="extend_video")
        if overlap == 0 and not keeps_stream_state:
            raise InvalidRequest(
                "extend_video needs overlap_frames >= 1 to condition on", param="overlap_frames"
            )

    return ResolvedRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or "",
        seed=seed,
        width=width,
        height=height,
        fps=fps,
        total_frames=total_frames,
        num_inference_steps=steps,
        guidance_scale=float(guidance),
        segment_frames=segment_frames,
        overlap_frames=overlap,
        reference_image=reference,
        extend_video=extend,
        audio=audio,
        audio_scale=float(audio_scale),
        video=video,
        strength=strength,
    )


def _check_video(request: GenerationRequest, width: int, height: int) -> np.ndarray | None:
    """The video to transform at `width` x `height`, alone among the given pictures."""
    video = request.video
    if video is None:
        return None
    for other in ("reference_image", "extend_video"):
        if getattr(request, other) is not None:
            raise InvalidRequest(f"give either video or {other}, not both", param="video")
    video = _check_image(video, "video", width, height)
    if video.ndim != 4 or len(video) == 0:
        raise InvalidRequest("video must hold at least one frame", param="video")
    return video


def _check_strength(strength: object, video: np.ndarray | None) -> float:
    if strength is None:
        return V2V_STRENGTH
    if video is None:
        raise InvalidRequest("strength needs a video to transform", param="strength")
    if (
        isinstance(strength, bool)
        or not isinstance(strength, int | float)
        or not math.isfinite(strength)
        or not 0 < strength <= 1
    ):
        raise InvalidRequest(
            f"strength must be a number in (0, 1] (1 re-makes the whole video), got {strength!r}",
            param="strength",
        )
    return float(strength)


def _video_frames(request: GenerationRequest, video: np.ndarray, asked: int | None) -> int:
    """The output's length with a video to transform: the video's, or the start of it that
    `num_frames` or `seconds` asks for."""
    if asked is None:
        raise InvalidRequest(
            "a video to transform has its own length: it cannot be unbounded", param="unbounded"
        )
    if request.num_frames is None and request.seconds is None:
        return len(video)
    if asked > len(video):
        param = "num_frames" if request.num_frames is not None else "seconds"
        raise InvalidRequest(
            f"{asked} frames asked, but the video to transform has only {len(video)}", param=param
        )
    return asked


def _total_frames(
    request: GenerationRequest,
    defaults: GeneratorDefaults,
    fps: float,
    limits: Limits,
    audio: AudioClip | None,
) -> int | None:
    given = [
        name
        for name, value in (
            ("num_frames", request.num_frames),
            ("seconds", request.seconds),
        )
        if value is not None
    ]
    if request.unbounded:
        if given:
            raise InvalidRequest(f"unbounded excludes {given[0]}", param=given[0])
        return None
    if len(given) > 1:
        raise InvalidRequest("give either seconds or num_frames, not both", param="num_frames")
    if request.num_frames is not None:
        frames = _positive_int(request.num_frames, "num_frames")
    elif request.seconds is None and audio is not None:
        frames = max(1, round(audio.seconds * fps))  # the video lasts as long as its audio
        if frames > limits.max_frames:
            raise InvalidRequest(
                f"audio lasts {audio.seconds:.1f} s, {frames} frames at {fps:g} fps: over the "
                f"cap of {limits.max_frames} frames (give seconds to use only its start)",
                param="audio",
            )
    else:
        seconds = _positive_float(
            request.seconds if request.seconds is not None else defaults.seconds, "seconds"
        )
        frames = max(1, round(seconds * fps))
    if frames > limits.max_frames:
        raise InvalidRequest(
            f"{frames} frames is over the cap of {limits.max_frames}",
            param=given[0] if given else "seconds",
        )
    return frames
