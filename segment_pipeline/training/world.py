"""The procedural world the embedded default model is trained and evaluated on.

One object (circle, square or triangle, about a fifth of the frame wide) of one of eight
colours on a plain black, gray or navy background, moving left, right, up or down at a speed
that crosses the frame in about four seconds, bouncing off the edges, or standing still. A
clip starts with the object in the third of the frame opposite its heading.

Everything is exact: `Clip.centres` is the object's centre in every frame (pixels), and
`SceneSpec` is what the prompt says. Prompts are made from templates; the training templates
and the held-out templates (`HELD_OUT_TEMPLATES`, for evaluation only) share the words of the
world but not their sentence forms. `parse_prompt` reads any sentence back into what it says
about the world; words it does not know are ignored.

The names and words are the model's vocabulary (`segment_pipeline.embedded_vocabulary`, all
that serving needs); this module adds what renders and measures them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..embedded_vocabulary import (
    BACKGROUND_WORDS,
    BACKGROUNDS,
    COLOUR_WORDS,
    COLOURS,
    DIRECTION_WORDS,
    DIRECTIONS,
    SHAPE_WORDS,
    SHAPES,
)

# Each colour's RGB value: what the world renders for a name of the vocabulary.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 40),
    "blue": (40, 90, 255),
    "yellow": (250, 230, 40),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
    "purple": (160, 50, 220),
    "cyan": (30, 220, 230),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "navy": (0, 0, 128),
}
# Unit heading of each direction in image coordinates (x right, y down).
HEADINGS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}


@dataclass(frozen=True)
class WorldConfig:
    """Frame size (pixels), frame rate (frames/s), object size and speed."""

    width: int = 128
    height: int = 128
    fps: float = 8.0
    object_fraction: float = 0.2  # object size / frame width
    crossing_seconds: float = 4.0  # time to cross the frame, edge to edge

    @property
    def object_size(self) -> int:
        """Object width and height (pixels)."""
        return max(4, round(self.object_fraction * self.width))

    @property
    def speed(self) -> float:
        """Object speed (pixels/frame) when moving."""
        return (self.width - self.object_size) / (self.crossing_seconds * self.fps)


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt says: shape, colour, background and direction (names from this module)."""

    shape: str
    colour: str
    background: str
    direction: str

    def __post_init__(self) -> None:
        for param, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("background", self.background, BACKGROUNDS),
            ("direction", self.direction, DIRECTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{param} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class Clip:
    """Rendered frames (T, H, W, 3) uint8 and the exact object centre (T, 2) as (x, y) pixels."""

    spec: SceneSpec
    frames: np.ndarray
    centres: np.ndarray


def sample_spec(rng: np.random.Generator) -> SceneSpec:
    """A uniformly random scene."""
    return SceneSpec(
        shape=str(rng.choice(SHAPES)),
        colour=str(rng.choice(COLOURS)),
        background=str(rng.choice(BACKGROUNDS)),
        direction=str(rng.choice(DIRECTIONS)),
    )


def start_centre(
    spec: SceneSpec, rng: np.random.Generator, config: WorldConfig, *, anywhere: bool = False
) -> tuple[float, float]:
    """Where a clip's object starts (pixels): in the third opposite its heading, or anywhere."""
    half = config.object_size / 2
    lo = np.array([half, half])
    hi = np.array([config.width - half, config.height - half])
    centre = rng.uniform(lo, hi)
    dx, dy = HEADINGS[spec.direction]
    if not anywhere:
        for axis, d, extent in ((0, dx, config.width), (1, dy, config.height)):
            if d > 0:
                centre[axis] = rng.uniform(lo[axis], extent / 3)
            elif d < 0:
                centre[axis] = rng.uniform(extent * 2 / 3, hi[axis])
    return float(centre[0]), float(centre[1])


def _bounce(position: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold free positions into [lo, hi] as a ball bouncing between two walls would be."""
    span = hi - lo
    folded = np.mod(position - lo, 2 * span)
    return lo + np.where(folded > span, 2 * span - folded, folded)


def trajectory(
    spec: SceneSpec,
    start: tuple[float, float],
    num_frames: int,
    config: WorldConfig,
    *,
    offset: int = 0,
) -> np.ndarray:
    """Object centres (num_frames, 2) for frames offset..offset+num_frames-1 of a clip that
    starts at `start` (frame 0) heading the spec's direction, bouncing off the edges."""
    half = config.object_size / 2
    t = np.arange(offset, offset + num_frames, dtype=np.float64)
    dx, dy = HEADINGS[spec.direction]
    x = _bounce(start[0] + dx * config.speed * t, half, config.width - half)
    y = _bounce(start[1] + dy * config.speed * t, half, config.height - half)
    return np.stack([x, y], axis=1)


def object_masks(shape: str, centres: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Boolean masks (T, H, W) of the object at each centre (pixel centres sampled)."""
    size = config.object_size
    ys = np.arange(config.height, dtype=np.float64)[None, :, None] + 0.5
    xs = np.arange(config.width, dtype=np.float64)[None, None, :] + 0.5
    cx = centres[:, 0, None, None]
    cy = centres[:, 1, None, None]
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= (size / 2) ** 2
    if shape == "square":
        return (np.abs(xs - cx) <= size / 2) & (np.abs(ys - cy) <= size / 2)
    if shape == "triangle":  # apex up, base at the bottom, as wide and as tall as `size`
        top = cy - size / 2
        depth = ys - top
        return (depth >= 0) & (depth <= size) & (np.abs(xs - cx) <= depth / 2)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render(spec: SceneSpec, centres: np.ndarray, config: WorldConfig) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 with the object at `centres` (T, 2)."""
    masks = object_masks(spec.shape, centres, config)
    frames = np.empty((*masks.shape, 3), dtype=np.uint8)
    frames[:] = np.array(BACKGROUND_RGB[spec.background], dtype=np.uint8)
    frames[masks] = np.array(COLOUR_RGB[spec.colour], dtype=np.uint8)
    return frames


def make_clip(
    spec: SceneSpec,
    rng: np.random.Generator,
    num_frames: int,
    config: WorldConfig | None = None,
    *,
    offset: int = 0,
    anywhere: bool = False,
) -> Clip:
    """A clip of `num_frames` frames, from frame `offset` of the scene's motion."""
    config = config or WorldConfig()
    start = start_centre(spec, rng, config, anywhere=anywhere)
    centres = trajectory(spec, start, num_frames, config, offset=offset)
    return Clip(spec=spec, frames=render(spec, centres, config), centres=centres)


# Prompts ------------------------------------------------------------------------------------
_SHAPE_SYNONYMS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
}
_COLOUR_SYNONYMS = {name: (name,) for name in COLOURS} | {"purple": ("purple", "violet")}
_BACKGROUND_SYNONYMS = {
    "black": ("black", "dark"),
    "gray": ("gray", "grey"),
    "navy": ("navy", "dark blue"),
}
_MOTION_PHRASES = {
    "left": ("moving left", "moving to the left", "drifting left", "sliding to the left",
             "going left", "heading left", "moves left", "slides left", "drifts to the left",
             "goes left", "heads left", "sliding left"),
    "right": ("moving right", "moving to the right", "drifting right", "sliding to the right",
              "going right", "heading right", "moves right", "slides right",
              "drifts to the right", "goes right", "heads right", "sliding right"),
    "up": ("moving up", "rising", "drifting up", "going up", "heading up", "moves up",
           "rises", "sliding up", "goes up"),
    "down": ("moving down", "falling", "drifting down", "going down", "heading down",
             "moves down", "falls", "sliding down", "goes down"),
    "still": ("still", "resting", "standing still", "not moving", "rests", "stands still",
              "is still", "static"),
}  # fmt: skip

# {obj} = colour + shape, {motion}, {bg} = background phrase (may be empty for black).
TRAIN_TEMPLATES = (
    "a {colour} {shape} {motion} on a {bg} background",
    "{colour} {shape} {motion}, {bg} background",
    "the {colour} {shape} {motion} on {bg}",
    "{bg} background, {colour} {shape}, {motion}",
    "a {shape}, {colour}, {motion} on a {bg} background",
    "{motion}: a {colour} {shape} on a {bg} background",
    "the {shape} is {colour} and {motion} on a {bg} background",
    "{colour} {shape} on {bg} {motion}",
    "a {colour} {shape} {motion}",
    "{colour} {shape} {motion} slowly",
)
HELD_OUT_TEMPLATES = (
    "on a {bg} background, a {colour} {shape} {motion}",
    "please show me one {colour} {shape} that is {motion} over a {bg} background",
    "{motion} is the {shape}; it is {colour} and the background is {bg}",
    "a {bg} scene where a small {colour} {shape} keeps {motion}",
    "there is a {shape} in {colour}, {motion}, in front of a {bg} backdrop",
    "{shape} {colour} {motion} {bg}",
)


def make_prompt(spec: SceneSpec, rng: np.random.Generator, *, held_out: bool = False) -> str:
    """A sentence saying `spec`, from the training or the held-out templates."""
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    # A sentence that names no background means black.
    fitting = [t for t in templates if "{bg}" in t or spec.background == "black"]
    template = str(rng.choice(fitting))
    text = template.format(
        colour=rng.choice(_COLOUR_SYNONYMS[spec.colour]),
        shape=rng.choice(_SHAPE_SYNONYMS[spec.shape]),
        motion=rng.choice(_MOTION_PHRASES[spec.direction]),
        bg=rng.choice(_BACKGROUND_SYNONYMS[spec.background]),
    )
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class ParsedPrompt:
    """What a sentence says about the world; None where it says nothing."""

    shape: str | None
    colour: str | None
    background: str  # black when not named
    direction: str  # still when not named


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Read shape, colour, background and direction from a free sentence; unknown words are
    ignored. "dark blue" and "navy" name the navy background; gray, grey, black and dark name
    backgrounds (no object has those colours); "not moving" is still."""
    words = re.findall(r"[a-z]+", prompt.lower())
    background = "black"
    shape: str | None = None
    colour: str | None = None
    direction: str | None = None
    i = 0
    while i < len(words):
        word, following = words[i], words[i + 1] if i + 1 < len(words) else ""
        if word == "dark" and following == "blue":
            background, i = "navy", i + 2
            continue
        if word == "not" and following in ("moving", "move", "moves"):
            direction, i = "still", i + 2
            continue
        if word in BACKGROUND_WORDS:
            background = BACKGROUND_WORDS[word]
        elif word in COLOUR_WORDS and colour is None:
            colour = COLOUR_WORDS[word]
        elif word in SHAPE_WORDS and shape is None:
            shape = SHAPE_WORDS[word]
        elif word in DIRECTION_WORDS and direction is None:
            direction = DIRECTION_WORDS[word]
        i += 1
    return ParsedPrompt(shape, colour, background, direction or "still")


# Measuring frames ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """What one frame shows: background name, and the object's colour and shape names and
    centre (x, y) in pixels, or None for all three when no object is found."""

    background: str
    colour: str | None
    shape: str | None
    centre: tuple[float, float] | None

    @property
    def present(self) -> bool:
        return self.centre is not None


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.array([palette[n] for n in names]) - colour, axis=1)
    return names[int(np.argmin(distances))]


def _open(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 square: drops specks and one-pixel lines."""

    def shifts(m: np.ndarray) -> list[np.ndarray]:
        padded = np.pad(m, 1)
        h, w = m.shape
        return [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]

    eroded = np.logical_and.reduce(shifts(mask))
    return np.logical_or.reduce(shifts(eroded))


def observe(frame: np.ndarray, config: WorldConfig | None = None) -> Observation:
    """Measure a decoded (H, W, 3) uint8 frame of the world.

    The background is the palette colour nearest the median border pixel; the object is the
    set of pixels far from it (after an opening); its colour is the palette colour nearest
    their median; its shape is read from how it fills its bounding box (square ~1, circle
    ~0.79) and whether its top is narrower than its bottom (triangle, apex up).
    """
    config = config or WorldConfig()
    pixels = frame.astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_colour = np.median(border, axis=0)
    background = _nearest(background_colour, BACKGROUND_RGB)
    raw = np.linalg.norm(pixels - background_colour, axis=-1) > 60
    core = _open(raw)
    smallest_area = 0.5 * config.object_size**2  # a triangle's
    if core.sum() < 0.3 * smallest_area:
        return Observation(background, None, None, None)
    # The opening cuts thin parts (a triangle's apex) too: take the raw pixels near the core.
    near = np.zeros_like(raw)
    core_rows = np.flatnonzero(core.any(axis=1))
    core_cols = np.flatnonzero(core.any(axis=0))
    margin = 6
    near[
        max(0, core_rows[0] - margin) : core_rows[-1] + 1 + margin,
        max(0, core_cols[0] - margin) : core_cols[-1] + 1 + margin,
    ] = True
    mask = raw & near
    colour = _nearest(np.median(pixels[mask], axis=0), COLOUR_RGB)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = mask[top:bottom, left:right]
    fill = box.mean()
    quarter = max(1, (bottom - top) // 4)
    top_width = box[:quarter].sum(axis=1).mean()
    bottom_width = box[-quarter:].sum(axis=1).mean()
    if bottom_width - top_width > 0.35 * (right - left):
        shape = "triangle"
    else:
        shape = "square" if fill > 0.89 else "circle"
    centre = ((left + right) / 2, (top + bottom) / 2)
    return Observation(background, colour, shape, (float(centre[0]), float(centre[1])))


def heading(centres: np.ndarray, config: WorldConfig | None = None) -> str:
    """The direction of a track of centres (T, 2), from its least-squares velocity: still
    when it moves less than a quarter of the world's speed."""
    config = config or WorldConfig()
    t = np.arange(len(centres), dtype=np.float64)
    velocity = np.polyfit(t, centres, 1)[0] if len(centres) >= 2 else np.zeros(2)
    if np.hypot(*velocity) < 0.25 * config.speed:
        return "still"
    vx, vy = velocity
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"
