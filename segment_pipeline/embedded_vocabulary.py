"""What the embedded default model's prompt encoder understands: the names of the world's
shapes, colours, backgrounds and directions, the words that name them, and the word list
its tokenizer reads.

Serving needs only this. The procedural world that renders training clips in these names
(`segment_pipeline.training.world`, with each colour's RGB value) is training code, and
nothing that serves imports it.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "white", "orange", "purple", "cyan")
"""Object colours. The class order of the text encoder's colour head: do not reorder."""
BACKGROUNDS = ("black", "gray", "navy")
DIRECTIONS = ("left", "right", "up", "down", "still")

# What the text encoder's auxiliary heads classify, and the class order of each (training
# only; see `segment_pipeline.training.train`). The shipped weights hold heads of these sizes.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "background": BACKGROUNDS,
    "direction": DIRECTIONS,
}

# Words of the world and what they name.
SHAPE_WORDS = {
    "circle": "circle", "ball": "circle", "disc": "circle", "disk": "circle", "dot": "circle",
    "square": "square", "box": "square", "block": "square", "triangle": "triangle",
}  # fmt: skip
COLOUR_WORDS = {name: name for name in COLOURS} | {"violet": "purple"}
BACKGROUND_WORDS = {
    "black": "black",
    "dark": "black",
    "gray": "gray",
    "grey": "gray",
    "navy": "navy",
}
DIRECTION_WORDS = {
    "left": "left", "right": "right", "up": "up", "down": "down",
    "rising": "up", "rises": "up", "falling": "down", "falls": "down",
    "still": "still", "resting": "still", "rests": "still", "static": "still",
    "stationary": "still",
}  # fmt: skip

PAD, UNK = "<pad>", "<unk>"

# The words of the world the default model is trained on, plus common filler. Any other
# word reads as <unk>. A word's index is its embedding row in the shipped weights.
VOCABULARY = [
    PAD, UNK,
    # shapes
    "circle", "ball", "disc", "disk", "dot", "square", "box", "block", "triangle",
    # colours
    "red", "green", "blue", "yellow", "white", "orange", "purple", "violet", "cyan",
    "black", "dark", "gray", "grey", "navy",
    # motion
    "moving", "moves", "move", "drifting", "drifts", "sliding", "slides", "going", "goes",
    "heading", "heads", "rising", "rises", "falling", "falls", "left", "right", "up", "down",
    "still", "resting", "rests", "standing", "stands", "not", "static", "stationary",
    # filler
    "a", "an", "the", "on", "in", "of", "to", "towards", "toward", "background", "slowly",
    "please", "with", "and", "is", "that", "which", "over", "across", "frame", "screen",
]  # fmt: skip
