"""Frame sizes: what a caller may ask for and the size a model is asked to make.

People ask for the sizes they know (``1280x720``, ``960x544``, ``720x1280``) or a preset
(``720p``); a model makes sizes in multiples of its VAE's and patch's compression, up to what
it can hold (a rotary table of so many positions, a service cap). `SizeRule` is that rule for
one backend under the service's `Limits`; `SizeRule.fit` rounds a size off the multiple to the
nearest one it can make, and refuses a size over the caps with an error naming the largest
size of that shape it allows, so an over-large size is a 422 before any work, never a crash
inside the model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "480p": (832, 480),  # Wan2.1's published 480p
    "540p": (960, 544),  # SkyReels-V2's published 540P
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
"""Landscape (width, height) in pixels of each preset; the portrait form is ``HxW``."""

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")
SIZE_PATTERN = r"^\s*(\d+\s*[xX×*]\s*\d+|(480|540|720|1080)[pP])\s*$"
"""What a size field takes, for schemas: ``WxH`` or a preset."""


def parse_size(text: str, param: str = "size") -> tuple[int, int]:
    """``"WxH"`` or a preset (``480p``, ``540p``, ``720p``, ``1080p``) → (width, height)
    in pixels; raises `InvalidRequest` naming `param`."""
    preset = SIZE_PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    match = _SIZE.match(text)
    if match is None:
        raise InvalidRequest(
            f'{param} must look like "1280x720" or be one of {", ".join(SIZE_PRESETS)}, '
            f"got {text!r}",
            param=param,
        )
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class SizeRule:
    """The frame sizes one model makes: sides in multiples of `multiple` (pixels, even, for
    H.264 4:2:0), at most `max_width` x `max_height`, and at most `max_pixels` a frame."""

    multiple: int = 2
    max_width: int = 1920
    max_height: int = 1920
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.multiple < 2 or self.multiple % 2:
            raise ValueError(f"a size multiple must be even and >= 2, got {self.multiple}")
        if min(self.max_width, self.max_height) < self.multiple:
            raise ValueError(f"caps {self.max_width}x{self.max_height} under {self.multiple}")

    def nearest(self, pixels: int) -> int:
        """The multiple of `multiple` nearest `pixels` (ties go down: never more pixels
        than asked for), at least one multiple."""
        return self.multiple * max(1, math.ceil(pixels / self.multiple - 0.5))

    def fits(self, width: int, height: int) -> bool:
        return (
            width <= self.max_width
            and height <= self.max_height
            and (self.max_pixels is None or width * height <= self.max_pixels)
        )

    def largest(self, width: int, height: int) -> tuple[int, int]:
        """The largest size of `width`:`height`'s shape (up to rounding) this rule allows."""
        scale = min(self.max_width / width, self.max_height / height, 1.0)
        if self.max_pixels is not None:
            scale = min(scale, math.sqrt(self.max_pixels / (width * height)))
        step = self.multiple
        out_w = max(step, int(width * scale) // step * step)
        out_h = max(step, int(height * scale) // step * step)
        while not self.fits(out_w, out_h) and (out_w > step or out_h > step):
            if out_w >= out_h and out_w > step:
                out_w -= step
            else:
                out_h -= step
        return out_w, out_h

    def fit(self, width: int, height: int, model: str) -> tuple[int, int]:
        """(width, height) rounded to the nearest multiple; over the caps of `model`, an
        `InvalidRequest` naming the side at fault and the largest size of that shape."""
        out_w, out_h = self.nearest(width), self.nearest(height)
        if self.fits(out_w, out_h):
            return out_w, out_h
        param = "height" if out_h > self.max_height and out_w <= self.max_width else "width"
        best_w, best_h = self.largest(out_w, out_h)
        pixels = "" if self.max_pixels is None else f" and {self.max_pixels} pixels a frame"
        raise InvalidRequest(
            f"{width}x{height} is over the cap of {self.max_width}x{self.max_height}{pixels} "
            f"for {model}; the largest size of that shape is {best_w}x{best_h}",
            param=param,
        )

    def describe(self) -> dict[str, Any]:
        """The rule as `/v1/models` reports it."""
        return {
            "multiple": self.multiple,
            "max_width": self.max_width,
            "max_height": self.max_height,
            "max_pixels": self.max_pixels,
            "presets": {name: f"{w}x{h}" for name, (w, h) in SIZE_PRESETS.items()},
        }


def rope_side_cap(rope_positions: int, pixels_per_position: int) -> int:
    """The longest side (pixels) a transformer with a rotary table of `rope_positions`
    positions an axis can take, when one position covers `pixels_per_position` pixels
    (the VAE's spatial compression times the patch size)."""
    return rope_positions * pixels_per_position
