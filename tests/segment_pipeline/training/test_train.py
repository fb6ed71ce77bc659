"""Training: a tiny run learns nothing useful but must run, save, load, resume and repeat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from segment_pipeline.embedded_model import TinyVideoDiffusion
from segment_pipeline.embedded_vocabulary import ATTRIBUTES
from segment_pipeline.training.train import TrainConfig, Trainer, draw_given_count, main, make_batch

from ..tiny_model import TINY

TRAIN = TrainConfig(steps=3, batch_size=2, warmup_steps=1, seed=7)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run ~20x faster on one thread than on two threads of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_batches_feed_what_inference_feeds() -> None:
    rng = np.random.default_rng(0)
    batch = make_batch(rng, 16, TINY, TrainConfig(text_drop=0.5))
    assert batch.frames.shape == (16, 4, 3, 32, 32)
    assert float(batch.frames.min()) >= -1 and float(batch.frames.max()) <= 1
    assert batch.objects.shape == (16, 4, 32, 32) and bool((batch.objects.sum((2, 3)) > 0).all())
    assert "" in batch.prompts and any(batch.prompts)
    assert batch.labels.shape == (16, len(ATTRIBUTES))
    for prompt, labels in zip(batch.prompts, batch.labels.tolist(), strict=True):
        assert (min(labels) == -1) == (prompt == "")
    counts = [draw_given_count(rng, 12, 4) for _ in range(2000)]
    assert {0, 1, 4} <= set(counts) and max(counts) < 12
    assert 0.2 < counts.count(0) / len(counts) < 0.4


def test_tiny_run_trains_saves_loads_and_repeats(tmp_path: Path) -> None:
    first = Trainer(tmp_path / "a", TRAIN, TINY)
    before = _weights(first.model)
    first.run(checkpoint_every=2)
    assert first.step == 3 and all(np.isfinite(loss) for _, loss in first.losses)
    assert any(not torch.equal(before[k], v) for k, v in first.model.state_dict().items())

    meta = json.loads((tmp_path / "a" / "training.json").read_text())
    assert meta["steps"] == 3 and meta["train_seconds"] > 0 and "CPU" in meta["hardware"]
    loaded = TinyVideoDiffusion.load(tmp_path / "a" / "model")
    assert loaded.config == TINY
    for key, value in first.ema.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key], value.half().float())

    second = Trainer(tmp_path / "b", TRAIN, TINY)
    second.run()
    for key, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    straight = Trainer(tmp_path / "straight", TRAIN, TINY)
    straight.run()
    interrupted = Trainer(tmp_path / "resumed", TrainConfig(**{**TRAIN.__dict__, "steps": 2}), TINY)
    interrupted.run()
    resumed = Trainer(tmp_path / "resumed", TRAIN, TINY)
    assert resumed.resume() and resumed.step == 2
    resumed.run()
    assert resumed.step == 3
    for key, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key], value, atol=1e-6), key


def test_command_line(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(TINY.__dict__))
    out = tmp_path / "run"
    main(["--out", str(out), "--steps", "2", "--batch-size", "2", "--model-config",
          str(config_path), "--seed", "3"])  # fmt: skip
    assert json.loads((out / "training.json").read_text())["steps"] == 2
    main(["--out", str(out), "--steps", "3", "--batch-size", "2", "--model-config",
          str(config_path), "--seed", "3", "--resume"])  # fmt: skip
    assert json.loads((out / "training.json").read_text())["steps"] == 3
    assert TinyVideoDiffusion.load(out / "model").config == TINY


def test_position_planes_start_as_the_model_they_grow_from(tmp_path: Path) -> None:
    base = Trainer(tmp_path / "base", TRAIN, TINY)
    base.run()
    grown = Trainer(tmp_path / "fine", TRAIN, init_from=tmp_path / "base" / "model",
                    position_planes=True)  # fmt: skip
    assert grown.model.config.position_planes and not base.model.config.position_planes
    frames, low = TINY.frames, TINY.low_size
    noisy = torch.randn(2, 3 * frames, *low)
    args = (noisy, torch.tensor([999, 40]), torch.zeros_like(noisy), torch.zeros(2, frames))
    source = TinyVideoDiffusion.load(tmp_path / "base" / "model")
    with torch.no_grad():
        text = source.encode_prompts(["a red ball moving left", ""])
        expected = source(*args, text)
        got = grown.model.eval()(*args, text)
    assert torch.allclose(expected, got, atol=1e-5)
    grown.run()  # and it trains, saves and loads with the planes
    assert TinyVideoDiffusion.load(tmp_path / "fine" / "model").config.position_planes


def test_first_windows_can_train_at_the_top_of_the_schedule() -> None:
    from segment_pipeline.training.train import _first_window_timesteps

    train = TrainConfig(top_t_share=0.5, t999_share=0.2, top_t_from=900)
    t = torch.zeros(4000, dtype=torch.long)
    counts = torch.tensor([0, 4] * 2000)
    moved = _first_window_timesteps(t, counts, torch.Generator().manual_seed(1), train)
    first, later = moved[counts == 0], moved[counts == 4]
    assert bool((later == 0).all())  # windows with given frames keep their draw
    assert 0.6 < float((first >= 900).float().mean()) < 0.8  # 0.5 + 0.2
    assert 0.15 < float((first == 999).float().mean()) < 0.25
    counts_with_more_first = [draw_given_count(np.random.default_rng(s), 12, 4, 0.5)
                              for s in range(2000)]  # fmt: skip
    assert 0.45 < counts_with_more_first.count(0) / 2000 < 0.55


def test_seam_frames_can_weigh_more() -> None:
    from segment_pipeline.training.train import _seam_weights

    weights = _seam_weights(torch.tensor([0, 1, 4, 10]), 12, TrainConfig(seam_weight=2.0))
    per_frame = weights[:, ::3, 0, 0]
    assert bool((per_frame[:2] == 1).all())  # a first window, a reference image: no seam
    assert per_frame[2].tolist() == [1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1]  # after 4 given
    assert per_frame[3].tolist() == [1] * 10 + [3, 3]


def test_decoder_fine_tune_changes_only_the_decoder_and_resumes(tmp_path: Path) -> None:
    from segment_pipeline.training.train_decoder import DecoderTrainConfig, run

    Trainer(tmp_path / "base", TRAIN, TINY).run()
    base = TinyVideoDiffusion.load(tmp_path / "base" / "model")
    train = DecoderTrainConfig(steps=3, frames=4, warmup_steps=1, seed=5)
    straight = run(tmp_path / "base" / "model", tmp_path / "straight", train)
    assert straight["steps"] == 3
    tuned = TinyVideoDiffusion.load(tmp_path / "straight" / "model")
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)

    run(tmp_path / "base" / "model", tmp_path / "resumed", DecoderTrainConfig(
        **{**train.__dict__, "steps": 2}))  # fmt: skip
    run(tmp_path / "base" / "model", tmp_path / "resumed", train, resume=True)
    resumed = TinyVideoDiffusion.load(tmp_path / "resumed" / "model")
    for key, value in tuned.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-3), key
