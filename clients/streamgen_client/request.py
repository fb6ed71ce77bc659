"""What the client asks the server for: a frozen request and its JSON body.

Field names are the server's (``POST /generate-stream`` and the WebSocket generate message
take the same body). ``None`` leaves a field out, so the server's model defaults apply.
`reference_image` is an image file's bytes (PNG, JPEG, …), `extend_video` a video file's
bytes and `audio` an audio file's bytes (WAV, MP3, AAC, FLAC, …); all are sent base64.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GenerateRequest:
    """One generation job. Duration is one of `seconds`, `num_frames` or `unbounded`."""

    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    width: int | None = None  # pixels
    height: int | None = None  # pixels
    size: str | None = None  # "WxH" or a preset ("720p"): the server reads and rounds it
    fps: float | None = None  # frames per second
    seconds: float | None = None  # video length (seconds)
    num_frames: int | None = None  # video length (frames)
    unbounded: bool = False  # keep generating segments until cancelled
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    segment_frames: int | None = None  # frames per generated window
    overlap_frames: int | None = None  # frames each window is conditioned on
    reference_image: bytes | None = field(default=None, repr=False)  # image file bytes
    extend_video: bytes | None = field(default=None, repr=False)  # video file bytes
    audio: bytes | None = field(default=None, repr=False)  # audio file bytes: the sound track
    audio_scale: float | None = None  # how strongly a model that follows audio follows it
    video: bytes | None = field(default=None, repr=False)  # video file bytes: to transform
    strength: float | None = None  # with video: how much is re-made, (0, 1]
    extra: Mapping[str, Any] = field(default_factory=dict)  # further server fields, as given

    def to_json(self) -> dict[str, Any]:
        """The JSON body: every field that is set; the image as base64 text."""
        body: dict[str, Any] = {"prompt": self.prompt}
        for name in (
            "negative_prompt",
            "seed",
            "width",
            "height",
            "size",
            "fps",
            "seconds",
            "num_frames",
            "num_inference_steps",
            "guidance_scale",
            "segment_frames",
            "overlap_frames",
            "audio_scale",
            "strength",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.unbounded:
            body["unbounded"] = True
        if self.reference_image is not None:
            body["reference_image"] = base64.b64encode(self.reference_image).decode("ascii")
        if self.extend_video is not None:
            body["extend_video"] = base64.b64encode(self.extend_video).decode("ascii")
        if self.audio is not None:
            body["audio"] = base64.b64encode(self.audio).decode("ascii")
        if self.video is not None:
            body["video"] = base64.b64encode(self.video).decode("ascii")
        body.update(self.extra)
        return body


def read_file(path: str | Path) -> bytes:
    """The bytes of a file, for `reference_image`, `extend_video`, `video`, `audio`."""
    return Path(path).read_bytes()
