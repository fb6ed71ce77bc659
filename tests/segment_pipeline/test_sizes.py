"""Frame sizes: presets, rounding to a model's multiple, caps that name the largest size."""

from __future__ import annotations

import pytest

from segment_pipeline import GenerationRequest, InvalidRequest, Limits
from segment_pipeline.backends.embedded import EmbeddedGenerator
from segment_pipeline.sizes import SIZE_PRESETS, SizeRule, parse_size, rope_side_cap

ASKED = ["1280x720", "720x1280", "960x544", "832x480", "720x720", "1024x1792"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1280x720", (1280, 720)), (" 720 X 1280 ", (720, 1280)), ("832*480", (832, 480)),
     ("480p", (832, 480)), ("540P", (960, 544)), ("720p", (1280, 720)),
     ("1080p", (1920, 1080))],
)  # fmt: skip
def test_sizes_and_presets_parse(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


def test_a_size_that_is_neither_is_refused_listing_the_presets() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_size("hd", "size")
    assert caught.value.param == "size" and "720p" in caught.value.message


@pytest.mark.parametrize(
    ("multiple", "made"),
    [
        (16, ["1280x720", "720x1280", "960x544", "832x480", "720x720", "1024x1792"]),
        (32, ["1280x704", "704x1280", "960x544", "832x480", "704x704", "1024x1792"]),
    ],
)
def test_the_sizes_people_ask_for_round_to_the_nearest_multiple(
    multiple: int, made: list[str]
) -> None:
    rule = SizeRule(multiple=multiple)
    out = [rule.fit(*parse_size(text), "m") for text in ASKED]
    assert [f"{w}x{h}" for w, h in out] == made
    assert all(w % multiple == 0 and h % multiple == 0 for w, h in out)


def test_rounding_goes_to_the_nearest_and_never_below_one_multiple() -> None:
    rule = SizeRule(multiple=32)
    assert [rule.nearest(p) for p in (1, 47, 48, 49, 700, 1279)] == [32, 32, 32, 64, 704, 1280]


def test_over_the_caps_is_refused_naming_the_largest_of_that_shape() -> None:
    rule = SizeRule(multiple=16, max_width=832, max_height=832, max_pixels=832 * 480)
    with pytest.raises(InvalidRequest) as caught:
        rule.fit(1280, 720, "wan-tiny")
    message = caught.value.message
    assert caught.value.param == "width"
    assert "832x832" in message and "wan-tiny" in message
    largest = message.rsplit(" ", 1)[-1]
    width, height = parse_size(largest)
    assert rule.fits(width, height) and width * height > 0.8 * 832 * 480
    assert abs(width / height - 1280 / 720) < 0.1
    with pytest.raises(InvalidRequest) as tall:
        rule.fit(480, 1792, "wan-tiny")
    assert tall.value.param == "height"


def test_a_rotary_table_caps_the_side() -> None:
    # Wan2.1: 1024 rotary positions an axis, 8x VAE times a 2x2 patch: 16 pixels a position.
    assert rope_side_cap(1024, 16) == 16384
    assert rope_side_cap(32, 16) == 512


def test_presets_are_landscape_and_fit_the_service_caps() -> None:
    rule = SizeRule(multiple=2, max_pixels=Limits().max_pixels)
    for width, height in SIZE_PRESETS.values():
        assert width > height and rule.fits(width, height)


def test_the_embedded_model_rounds_and_caps_at_four_times_its_size() -> None:
    generator = EmbeddedGenerator()
    rule = generator.size_rule()
    assert rule.max_width == 4 * generator.defaults.width
    resolved = generator.resolve(GenerationRequest(prompt="a ball", width=70, height=90, seed=1))
    step = generator.size_multiple
    assert (resolved.width, resolved.height) == (rule.nearest(70), rule.nearest(90))
    assert resolved.width % step == 0 and resolved.height % step == 0
    with pytest.raises(InvalidRequest) as caught:
        generator.resolve(GenerationRequest(prompt="a ball", width=1280, height=720))
    assert f"{rule.max_width}x{rule.max_height}" in caught.value.message
    assert generator.describe()["sizes"]["multiple"] == step


def test_the_service_caps_bound_every_model() -> None:
    generator = EmbeddedGenerator(limits=Limits(max_width=96, max_height=96))
    rule = generator.size_rule()
    assert rule.max_width <= 96 and rule.max_width % generator.size_multiple == 0
