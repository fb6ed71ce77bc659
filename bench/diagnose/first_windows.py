"""Why first windows miss the prompted direction (issue 13): measurements on the shipped model.

    nice -n 10 python bench/diagnose/first_windows.py [--parts windows,swap,settings,loss,recipe]
        [--prompts 2] [--seeds 4] [--model DIR] [--out bench/diagnose/results.json]

Parts (each prints a markdown table; all numbers also go to --out as JSON):

- windows:  first windows (0 given frames, window index 0) against continued windows (4 given
            frames of a real world clip moving the prompted way, window index 1), with held-out
            and with training sentence forms: direction (heading of the object's track), axis,
            sign of the move along the prompted axis, start in the third opposite the heading,
            and the velocity along / across the prompted axis compared with the world's speed.
- swap:     fixed seed, shape, colour, background and sentence form; only the direction word
            changes. How much do start position and velocity move with the word, against how
            much they move with the seed? Also the first denoising step's clean-window
            prediction (input is pure noise at zero terminal SNR: it is the model's mean
            video for the prompt) and the step at which the final position is decided.
- settings: first windows at guidance 3 and at 20 steps against the defaults (1, 8).
- loss:     the denoiser's clean-window error (object-weighted, as in training, without the
            SNR weight) per timestep, first vs continued windows, with the right prompt, the
            direction word swapped, and the empty prompt: how much the text helps at each
            noise level. Also how much each (given, timestep) cell weighs in the training loss.
- recipe:   numbers of the training recipe (first windows per batch, SNR and loss weight per
            timestep, text vector against timestep embedding norms).

Frames are measured with `segment_pipeline.training.world.observe` on the decoded frames (not
through fMP4, which changes nothing measurable at this size). torch runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from segment_pipeline.backends.embedded import EmbeddedGenerator, window_seed  # noqa: E402
from segment_pipeline.embedded_model import TinyVideoDiffusion  # noqa: E402
from segment_pipeline.embedded_vocabulary import (  # noqa: E402
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
)
from segment_pipeline.generator import WindowTask  # noqa: E402
from segment_pipeline.request import GenerationRequest  # noqa: E402
from segment_pipeline.training.train import TrainConfig, draw_given_count  # noqa: E402
from segment_pipeline.training.world import (  # noqa: E402
    BACKGROUND_RGB,
    HEADINGS,
    SceneSpec,
    WorldConfig,
    heading,
    make_clip,
    make_prompt,
    observe,
    render,
    start_centre,
    trajectory,
)

WORLD = WorldConfig()
SPEED = WORLD.speed  # 3.2 px/frame
FRAMES = 12
OVERLAP = 4


# Sampling ----------------------------------------------------------------------------------
@torch.inference_mode()
def denoise(
    model: TinyVideoDiffusion,
    prompts: list[str],
    seeds: list[int],
    index: int,
    given: list[np.ndarray],
    steps: int = 8,
    guidance: float = 1.0,
    keep_x0: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mirror of `EmbeddedGenerator.generate_windows` (checked against it in `main`): the
    final low-resolution windows (B, F*3, h, w) and, if asked, each step's x0 prediction."""
    count = len(prompts)
    guided = guidance > 1.0
    rows = 2 if guided else 1
    texts: list[str] = []
    for p in prompts:
        texts += [p] + ([""] if guided else [])
    text = model.encode_prompts(texts)
    given_pixels = torch.zeros(count, FRAMES, 3, WORLD.height, WORLD.width)
    given_mask = torch.zeros(count, FRAMES)
    for i, g in enumerate(given):
        if len(g):
            given_pixels[i, : len(g)] = torch.from_numpy(g).permute(0, 3, 1, 2).float() / 127.5 - 1
            given_mask[i, : len(g)] = 1.0
    given_low = model.to_low(given_pixels)
    noise = [
        torch.randn(given_low.shape[1:], generator=torch.Generator().manual_seed(
            window_seed(s, index)))[None]
        for s in seeds
    ]  # fmt: skip
    sample = torch.cat(noise)
    scheduler = model.make_scheduler()
    scheduler.set_timesteps(steps)
    x0s = []
    for t in scheduler.timesteps:
        x0 = model(
            sample.repeat_interleave(rows, 0),
            t.expand(count * rows),
            given_low.repeat_interleave(rows, 0),
            given_mask.repeat_interleave(rows, 0),
            text,
        )
        if guided:
            x0 = x0.view(count, rows, *x0.shape[1:])
            x0 = x0[:, 1] + guidance * (x0[:, 0] - x0[:, 1])
        if keep_x0:
            x0s.append(x0.clone())
        sample = scheduler.step(x0, t, sample).prev_sample
    return sample, x0s


@torch.inference_mode()
def to_frames(model: TinyVideoDiffusion, low: torch.Tensor) -> np.ndarray:
    """Low-resolution windows -> decoded uint8 frames (B, F, H, W, 3), as the backend does."""
    out = model.decode(low)
    return ((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()


def run_batched(model, jobs, steps=8, guidance=1.0, batch=20):
    """jobs: list of (prompt, seed, index, given) -> decoded frames (N, F, H, W, 3)."""
    out = []
    for k in range(0, len(jobs), batch):
        chunk = jobs[k : k + batch]
        low, _ = denoise(model, [j[0] for j in chunk], [j[1] for j in chunk], chunk[0][2],
                         [j[3] for j in chunk], steps, guidance)  # fmt: skip
        frames = to_frames(model, low)
        for j, f in zip(chunk, frames, strict=True):  # put given frames back, as the loop does
            if len(j[3]):
                f[: len(j[3])] = j[3]
        out.append(frames)
    return np.concatenate(out)


# Measuring ----------------------------------------------------------------------------------
def track(frames: np.ndarray) -> np.ndarray:
    last, out = (np.nan, np.nan), []
    for f in frames:
        o = observe(f)
        last = o.centre if o.centre is not None else last
        out.append(last)
    return np.array(out, dtype=np.float64)


def measure(spec: SceneSpec, frames: np.ndarray, first: int) -> dict:
    """Measures of one window, on frames first..end (first=0: the whole first window;
    first=4: the generated frames of a continued window)."""
    centres = track(frames)
    part = centres[first:]
    seen = ~np.isnan(part[:, 0])
    out: dict = {"present": float(seen.mean())}
    if seen.sum() < 2:
        return out | {"dir_ok": False, "axis_ok": False, "sign_ok": False}
    t = np.arange(len(part))[seen]
    v = np.polyfit(t, part[seen], 1)[0]  # px/frame (x, y)
    got = heading(part[seen])
    h = np.array(HEADINGS[spec.direction])
    out |= {"heading": got, "dir_ok": got == spec.direction, "speed": float(np.hypot(*v))}
    # net displacement over the measured frames, along the prompted axis
    seen_pts = part[seen]
    disp = seen_pts[-1] - seen_pts[0]
    if spec.direction == "still":
        return out
    axis_words = ("left", "right") if h[0] else ("up", "down")
    out["axis_ok"] = got in axis_words
    out["sign_ok"] = bool(v @ h > 0)
    out["v_along"] = float(v @ h / SPEED)  # 1.0 = the world's speed, the right way
    out["v_across"] = float(abs(v[0] * h[1] - v[1] * h[0]) / SPEED)
    out["disp_along"] = float(disp @ h)
    # reversal: the per-frame move along the axis changes sign (a bounce or a turn)
    moves = np.diff(seen_pts, axis=0) @ h
    out["reverses"] = bool((moves > 1).any() and (moves < -1).any())
    if first == 0 and not np.isnan(centres[0, 0]):
        # position along the heading, -1 (the wall it comes from) .. 1 (the wall it heads to)
        pos = float((centres[0] - 64) @ h / 64)
        out["start_pos"] = pos
        out["start_third_ok"] = pos < -1 / 3
    return out


def summarise(rows: list[dict]) -> dict:
    def mean(key, only_moving=False):
        vals = [r[key] for r in rows if key in r and (not only_moving or r["dir"] != "still")]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "n": len(rows),
        "dir_ok": mean("dir_ok"),
        "axis_ok": mean("axis_ok"),
        "sign_ok": mean("sign_ok"),
        "start_third_ok": mean("start_third_ok"),
        "start_pos": mean("start_pos"),
        "v_along": mean("v_along"),
        "v_across": mean("v_across"),
        "speed": mean("speed"),
        "reverses": mean("reverses"),
        "present": mean("present"),
    }


def table(title: str, summaries: dict[str, dict], keys: list[str]) -> str:
    lines = [f"\n### {title}", "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, s in summaries.items():
        cells = []
        for k in keys:
            v = s.get(k, float("nan"))
            cells.append("" if v != v else (f"{v:.0%}" if k.endswith("ok") or k in (
                "reverses", "present") else f"{v:+.2f}" if k in ("v_along", "start_pos")
                else f"{v:.2f}"))  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Test sets -----------------------------------------------------------------------------------
def make_specs(n_prompts: int, seed: int) -> list[tuple[SceneSpec, np.random.Generator]]:
    rng = np.random.default_rng(seed)
    specs = []
    for d in DIRECTIONS:
        for _ in range(n_prompts):
            specs.append(SceneSpec(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))),
                                   str(rng.choice(list(BACKGROUNDS))), d))  # fmt: skip
    return specs


def given_frames(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """4 frames of a real clip moving the prompted way that will not bounce for the next 8."""
    period = max(1, round(2 * (WORLD.width - WORLD.object_size) / WORLD.speed))
    h = np.array(HEADINGS[spec.direction])
    while True:
        clip_rng = np.random.default_rng(rng.integers(2**32))
        offset = int(clip_rng.integers(0, period))
        start = start_centre(spec, clip_rng, WORLD)
        centres = trajectory(spec, start, FRAMES, WORLD, offset=offset)
        if spec.direction == "still" or (np.diff(centres, axis=0) @ h > 0).all():
            return render(spec, centres[:OVERLAP], WORLD)


# Parts --------------------------------------------------------------------------------------
def part_windows(model, args, results, settings_only=False):
    specs = make_specs(args.prompts, args.seed)
    report = {}
    conditions = [("held-out", True)] + ([] if settings_only else [("train", False)])
    variants = [("first", 0)] + (
        [] if settings_only or args.first_only else [("continued", OVERLAP)]
    )
    settings = [(8, 1.0)] if not settings_only else [(8, 3.0), (20, 1.0)]
    for (tname, held_out), (kind, n_given), (steps, guidance) in (
        (c, v, s) for c in conditions for v in variants for s in settings
    ):
        rng = np.random.default_rng(args.seed + 1)
        jobs, meta = [], []
        for spec in specs:
            prompt = make_prompt(spec, rng, held_out=held_out)
            for s in range(args.seeds):
                g = given_frames(spec, rng) if n_given else np.zeros((0, 128, 128, 3), np.uint8)
                jobs.append((prompt, 1000 + s, 1 if n_given else 0, g))
                meta.append((spec, prompt, s))
        started = time.perf_counter()
        frames = run_batched(model, jobs, steps, guidance)
        rows = []
        for (spec, prompt, s), f in zip(meta, frames, strict=True):
            r = measure(spec, f, n_given) | {"dir": spec.direction, "prompt": prompt, "seed": s}
            if n_given == 0:  # the first window on the continued window's frames, for velocity
                r4 = measure(spec, f, OVERLAP)
                r["v_along_4_11"] = r4.get("v_along", float("nan"))
            rows.append(r)
        name = f"{kind} / {tname} / {steps} steps / guidance {guidance:g}"
        per_dir = {d: summarise([r for r in rows if r["dir"] == d]) for d in DIRECTIONS}
        per_dir["all"] = summarise(rows)
        report[name] = {"summary": per_dir, "rows": rows,
                        "seconds": time.perf_counter() - started}  # fmt: skip
        keys = ["dir_ok", "axis_ok", "sign_ok", "v_along", "v_across", "speed", "reverses",
                "present"] + (["start_third_ok", "start_pos"] if n_given == 0 else [])  # fmt: skip
        print(table(name + f" (n={len(rows)})", per_dir, keys), flush=True)
    results["settings" if settings_only else "windows"] = report


def centroid(low: torch.Tensor) -> np.ndarray:
    """Per frame, the centre (full-res px, x y) of a low-res window's deviation from its
    background (median border colour); (B, F*3, h, w) -> (B, F, 2)."""
    b, fc, h, w = low.shape
    x = low.view(b, fc // 3, 3, h, w)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]
    dev = (x - bg).norm(dim=2)  # (b, f, h, w)
    dev = torch.relu(dev - 0.15)  # ignore faint haze
    ys = (torch.arange(h) + 0.5) * WORLD.height / h
    xs = (torch.arange(w) + 0.5) * WORLD.width / w
    mass = dev.sum((-1, -2)).clamp(min=1e-6)
    cx = (dev * xs[None, None, None, :]).sum((-1, -2)) / mass
    cy = (dev * ys[None, None, :, None]).sum((-1, -2)) / mass
    return torch.stack([cx, cy], -1).numpy()


def part_swap(model, args, results):
    """Only the direction word changes; fixed seed, object and sentence form."""
    phrases = {"left": "moving left", "right": "moving right", "up": "moving up",
               "down": "moving down", "still": "still"}  # fmt: skip
    rng = np.random.default_rng(args.seed + 5)
    n = args.swap_seeds
    objects = [(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))),
                str(rng.choice(list(BACKGROUNDS)))) for _ in range(n)]  # fmt: skip
    template = "on a {bg} background, a {colour} {shape} {motion}"  # held-out form 0
    jobs, meta = [], []
    for k, (shape, colour, bg) in enumerate(objects):
        for d, phrase in phrases.items():
            prompt = template.format(bg=bg, colour=colour, shape=shape, motion=phrase)
            jobs.append((prompt, 2000 + k, 0, np.zeros((0, 128, 128, 3), np.uint8)))
            meta.append((SceneSpec(shape, colour, bg, d), k))
    lows, x0s_all = [], []
    for k in range(0, len(jobs), 20):
        chunk = jobs[k : k + 20]
        low, x0s = denoise(model, [j[0] for j in chunk], [j[1] for j in chunk], 0,
                           [j[3] for j in chunk], keep_x0=True)  # fmt: skip
        lows.append(low)
        x0s_all.append(torch.stack(x0s, 1))  # (B, steps, F*3, h, w)
    low = torch.cat(lows)
    x0s = torch.cat(x0s_all)
    frames = to_frames(model, low)
    rows = []
    for (spec, k), f in zip(meta, frames, strict=True):
        c = track(f)
        r = measure(spec, f, 0) | {"dir": spec.direction, "seed": k}
        r["start"] = c[0].tolist()
        seen = ~np.isnan(c[:, 0])
        r["v"] = (np.polyfit(np.arange(12)[seen], c[seen], 1)[0].tolist()
                  if seen.sum() >= 2 else [np.nan, np.nan])  # fmt: skip
        rows.append(r)
    D = len(phrases)
    start = np.array([r["start"] for r in rows]).reshape(n, D, 2)
    vel = np.array([r["v"] for r in rows]).reshape(n, D, 2)

    def spread(a: np.ndarray, axis: int) -> float:
        """Mean distance from the mean along `axis` (ignoring NaN)."""
        centred = a - np.nanmean(a, axis=axis, keepdims=True)
        return float(np.nanmean(np.linalg.norm(centred, axis=-1)))

    # x0 of the first step (t=999, pure-noise input): the model's mean video per prompt
    first_x0 = x0s[:, 0]
    lowdiff_word = float((first_x0.view(n, D, -1) - first_x0.view(n, D, -1).mean(1, keepdim=True))
                         .norm(dim=-1).mean())  # fmt: skip
    lowdiff_seed = float((first_x0.view(n, D, -1) - first_x0.view(n, D, -1).mean(0, keepdim=True))
                         .norm(dim=-1).mean())  # fmt: skip
    final_word = float((low.view(n, D, -1) - low.view(n, D, -1).mean(1, keepdim=True))
                       .norm(dim=-1).mean())  # fmt: skip
    final_seed = float((low.view(n, D, -1) - low.view(n, D, -1).mean(0, keepdim=True))
                       .norm(dim=-1).mean())  # fmt: skip
    cen = centroid(first_x0).reshape(n, D, FRAMES, 2).mean(0)  # mean over seeds: (D, F, 2)
    mean_video = {}
    for i, d in enumerate(phrases):
        v = np.polyfit(np.arange(FRAMES), cen[i], 1)[0]
        mean_video[d] = {"start": cen[i, 0].round(1).tolist(),
                         "v_px_per_frame": v.round(2).tolist()}  # fmt: skip
    # when is the final position decided: step at which x0's frame-0 centroid comes within
    # 6 px of the final one (and stays)
    steps = x0s.shape[1]
    cents = np.stack([centroid(x0s[:, s]) for s in range(steps)], 1)  # (B, steps, F, 2)
    final_c = centroid(low)
    err = np.linalg.norm(cents[:, :, 0] - final_c[:, None, 0], axis=-1)  # (B, steps)
    decided = [int(next((s for s in range(steps) if (err[b, s:] < 6).all()), steps))
               for b in range(len(err))]  # fmt: skip
    rep = {
        "start_spread_over_words_px": spread(start, 1),
        "start_spread_over_seeds_px": spread(start, 0),
        "velocity_spread_over_words_px_per_frame": spread(vel, 1),
        "velocity_spread_over_seeds_px_per_frame": spread(vel, 0),
        "first_step_x0_spread_words": lowdiff_word,
        "first_step_x0_spread_seeds": lowdiff_seed,
        "final_low_spread_words": final_word,
        "final_low_spread_seeds": final_seed,
        "mean_video_first_step": mean_video,
        "position_decided_at_step_mean": float(np.mean(decided)),
        "position_decided_hist": np.bincount(decided, minlength=steps + 1).tolist(),
        "per_word": {d: summarise([r for r in rows if r["dir"] == d]) for d in phrases},
        "rows": rows,
    }
    results["swap"] = rep
    print(f"\n### direction-word swap (n={n} seeds x {D} words, first windows, held-out form)")
    for k, v in rep.items():
        if k not in ("rows", "per_word"):
            print(f"- {k}: {v}")
    print(table("per word", rep["per_word"], ["dir_ok", "axis_ok", "sign_ok", "v_along",
                                              "start_third_ok", "start_pos"]))  # fmt: skip


@torch.inference_mode()
def part_loss(model, args, results):
    """Clean-window error per timestep: first vs continued windows, right / swapped / no text."""
    rng = np.random.default_rng([args.seed, 77])
    other = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "left"}
    per_dir = args.loss_clips
    period = max(1, round(2 * (WORLD.width - WORLD.object_size) / WORLD.speed))
    batches = {}
    for n_given in (0, OVERLAP):
        frames, objects, right, swapped = [], [], [], []
        for d in DIRECTIONS:
            for _ in range(per_dir):
                spec = SceneSpec(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))),
                                 str(rng.choice(list(BACKGROUNDS))), d)  # fmt: skip
                offset = int(rng.integers(0, period)) if n_given else 0
                clip = make_clip(spec, rng, FRAMES, WORLD, offset=offset)
                frames.append(clip.frames)
                objects.append(np.any(clip.frames != BACKGROUND_RGB[spec.background], axis=-1))
                state = rng.bit_generator.state
                right.append(make_prompt(spec, rng, held_out=True))
                rng.bit_generator.state = state  # same sentence form and synonyms
                wrong = SceneSpec(spec.shape, spec.colour, spec.background, other[d])
                swapped.append(make_prompt(wrong, rng, held_out=True))
        pixels = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        batches[n_given] = (pixels, torch.from_numpy(np.stack(objects)).float(), right, swapped)
    scheduler = model.make_scheduler()
    ac = scheduler.alphas_cumprod
    ts = [999, 950, 874, 750, 624, 499, 374, 249, 124, 20]
    gen = torch.Generator().manual_seed(5)
    rep: dict = {"timesteps": ts, "snr": [float(ac[t] / (1 - ac[t])) for t in ts]}
    for n_given, (pixels, objects, right, swapped) in batches.items():
        b = len(right)
        x0 = model.to_low(pixels)
        mask = (torch.arange(FRAMES)[None] < n_given).float().expand(b, -1)
        given = x0 * mask.repeat_interleave(3, 1)[:, :, None, None]
        obj = model.to_low(objects[:, :, None].expand(-1, -1, 3, -1, -1))
        weight = 1 + 4.0 * (obj > 0).float()
        texts = {"right": model.encode_prompts(right), "swapped": model.encode_prompts(swapped),
                 "empty": model.encode_prompts([""] * b)}  # fmt: skip
        cells = {k: [] for k in texts}
        new = (torch.arange(FRAMES) >= n_given).repeat_interleave(3)  # only generated frames
        for t in ts:
            noise = torch.randn(x0.shape, generator=gen)
            a, s = ac[t].sqrt(), (1 - ac[t]).sqrt()
            noisy = a * x0 + s * noise
            for k, text in texts.items():
                pred = model(noisy, torch.full((b,), t), given, mask, text)
                err = (weight * (pred - x0) ** 2)[:, new].sum() / weight[:, new].sum()
                cells[k].append(float(err))
        rep[f"given={n_given}"] = cells
    # training weight of each timestep: 1 + SNR capped at 5
    w = np.minimum(1 + np.array(rep["snr"]), 5.0)
    rep["snr_weight"] = w.tolist()
    results["loss"] = rep
    print("\n### clean-window error (object-weighted MSE on generated frames) by timestep")
    print(
        "| t | SNR | train weight | first: right | first: swapped dir | first: empty | "
        "cont.: right | cont.: swapped | cont.: empty |"
    )
    print("|---" * 9 + "|")
    for i, t in enumerate(ts):
        f, c = rep["given=0"], rep[f"given={OVERLAP}"]
        print(
            f"| {t} | {rep['snr'][i]:.3f} | {w[i]:.2f} | {f['right'][i]:.4f} | "
            f"{f['swapped'][i]:.4f} | {f['empty'][i]:.4f} | {c['right'][i]:.4f} | "
            f"{c['swapped'][i]:.4f} | {c['empty'][i]:.4f} |"
        )


@torch.inference_mode()
def part_recipe(model, args, results):
    train = TrainConfig()
    rng = np.random.default_rng(0)
    counts = np.array([draw_given_count(rng, FRAMES, train.overlap) for _ in range(200000)])
    ac = model.make_scheduler().alphas_cumprod.numpy().astype(np.float64)
    snr = ac / np.maximum(1 - ac, 1e-12)
    w = np.minimum(1 + snr, train.snr_cap)
    ts = np.arange(len(ac))
    first_frac = float((counts == 0).mean())
    rep = {
        "given_count_fractions": {int(k): float((counts == k).mean()) for k in np.unique(counts)},
        "first_windows_per_batch": first_frac * train.batch_size,
        "text_conditioned_first_windows_per_batch": first_frac
        * train.batch_size
        * (1 - train.text_drop),
        "text_conditioned_first_windows_in_5000_steps": first_frac
        * train.batch_size
        * (1 - train.text_drop)
        * 5000,
        "per_direction_first_windows_in_5000_steps": first_frac
        * train.batch_size
        * (1 - train.text_drop)
        * 5000
        / 5,
        "snr_at": {int(t): float(snr[t]) for t in (999, 990, 950, 874, 750, 624, 499, 249, 0)},
        "fraction_of_timesteps_at_cap": float((w >= train.snr_cap).mean()),
        "first_t_with_weight_below_cap": int(ts[w < train.snr_cap][0]),
        "weight_share_t_ge_750": float(w[750:].sum() / w.sum()),
        "timestep_share_t_ge_750": 0.25,
        "training_draws_t_ge_950_in_5000_steps_first_windows": first_frac
        * train.batch_size
        * 5000
        * 0.05,
    }
    # text vector against the timestep embedding it is added to (FiLM input)
    unet = model.unet
    prompts = [
        f"on a black background, a red circle {p}"
        for p in ("moving left", "moving right", "moving up", "moving down", "still")
    ]
    text = model.encode_prompts(prompts)
    norms = {}
    for t in (999, 500, 20):
        temb = unet.time_embedding(unet.time_proj(torch.tensor([t])).float())[0]
        norms[t] = float(temb.norm())
    diffs = [float((text[i] - text[j]).norm()) for i in range(5) for j in range(i + 1, 5)]
    rep["time_embedding_norm"] = norms
    rep["text_vector_norm_mean"] = float(text.norm(dim=1).mean())
    rep["text_direction_diff_norm_mean"] = float(np.mean(diffs))
    results["recipe"] = rep
    print("\n### recipe")
    for k, v in rep.items():
        print(f"- {k}: {v}")


@torch.inference_mode()
def part_sdedit(model, args, results):
    """Which steps decide the direction: start the 8-step DDIM loop at step k from a real first
    window (object in the opposite third, moving the prompted way) noised to that step's t,
    with the right prompt and with the opposite direction word. k=0 is ordinary sampling
    (pure noise, nothing of the clip survives)."""
    rng = np.random.default_rng([args.seed, 91])
    other = {"left": "right", "right": "left", "up": "down", "down": "up"}
    moving = [d for d in DIRECTIONS if d != "still"]
    specs, clips, right, swapped, seeds = [], [], [], [], []
    for d in moving:
        for i in range(args.prompts * args.seeds):
            spec = SceneSpec(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))),
                             str(rng.choice(list(BACKGROUNDS))), d)  # fmt: skip
            clips.append(make_clip(spec, rng, FRAMES, WORLD).frames)
            state = rng.bit_generator.state
            right.append(make_prompt(spec, rng, held_out=True))
            rng.bit_generator.state = state
            swapped.append(make_prompt(SceneSpec(spec.shape, spec.colour, spec.background,
                                                 other[d]), rng, held_out=True))  # fmt: skip
            specs.append(spec)
            seeds.append(3000 + i)
    pixels = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    x0 = model.to_low(pixels)
    scheduler = model.make_scheduler()
    scheduler.set_timesteps(8)
    timesteps = list(scheduler.timesteps)
    ac = scheduler.alphas_cumprod
    b = len(specs)
    zeros_given = torch.zeros_like(x0)
    mask = torch.zeros(b, FRAMES)
    rep = {}
    print("\n### start sampling at step k from a real first window noised to t_k (8-step DDIM)")
    print(
        "| k | t_k | prompt | dir_ok | axis_ok | start_third_ok | v_along "
        "| follows clip's direction |"
    )
    print("|---" * 8 + "|")
    for k in (0, 1, 2, 3):
        for pname, prompts in (("right", right), ("swapped", swapped)):
            text = model.encode_prompts(prompts)
            noise = torch.cat(
                [
                    torch.randn(
                        x0.shape[1:], generator=torch.Generator().manual_seed(window_seed(s, 0))
                    )[None]
                    for s in seeds
                ]
            )
            t = timesteps[k]
            sample = ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * noise
            for tt in timesteps[k:]:
                pred = model(sample, tt.expand(b), zeros_given, mask, text)
                sample = scheduler.step(pred, tt, sample).prev_sample
            frames = to_frames(model, sample)
            rows = [measure(spec, f, 0) | {"dir": spec.direction}
                    for spec, f in zip(specs, frames, strict=True)]  # fmt: skip
            summ = summarise(rows)
            if pname == "swapped":  # right w.r.t. the text = opposite of the clip
                summ["follows_clip"] = 1 - float(np.mean([r.get("sign_ok", False) is False
                                                          and r.get("axis_ok", False)
                                                          for r in rows]))  # fmt: skip
                summ["follows_text"] = float(np.mean([r.get("axis_ok", False)
                                                      and not r.get("sign_ok", True)
                                                      for r in rows]))  # fmt: skip
            rep[f"k={k} ({pname})"] = summ
            follow = (
                f"{summ['dir_ok']:.0%}"
                if pname == "right"
                else (f"{summ['dir_ok']:.0%} (text: {summ['follows_text']:.0%})")
            )
            print(
                f"| {k} | {int(t)} | {pname} | {summ['dir_ok']:.0%} | {summ['axis_ok']:.0%} | "
                f"{summ['start_third_ok']:.0%} | {summ['v_along']:+.2f} | {follow} |",
                flush=True,
            )
    results["sdedit"] = rep


def part_oracle(model, args, results):
    """The best possible clean-window error at t=999 (pure noise in, first windows): the
    error of the per-prompt mean video, knowing the direction, not knowing it, or with the
    direction swapped. Compare with the model's row t=999 in the loss part."""
    rng = np.random.default_rng([args.seed, 77])
    other = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "left"}
    samples = 48

    def low_clips(spec, n):
        fr = np.stack([make_clip(spec, rng, FRAMES, WORLD).frames for _ in range(n)])
        px = torch.from_numpy(fr).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        return model.to_low(px), fr

    errs = {"knows direction": [], "direction unknown": [], "direction swapped": []}
    for d in DIRECTIONS:
        for _ in range(args.loss_clips):
            spec = SceneSpec(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))),
                             str(rng.choice(list(BACKGROUNDS))), d)  # fmt: skip
            x, fr = low_clips(spec, 1)
            obj = np.any(fr != BACKGROUND_RGB[spec.background], axis=-1)
            objl = model.to_low(torch.from_numpy(obj).float()[:, :, None].expand(-1, -1, 3, -1, -1))
            w = 1 + 4.0 * (objl > 0).float()
            means = {
                dd: low_clips(SceneSpec(spec.shape, spec.colour, spec.background, dd), samples)[
                    0
                ].mean(0, keepdim=True)
                for dd in DIRECTIONS
            }
            mix = torch.cat(list(means.values())).mean(0, keepdim=True)
            for name, m in (("knows direction", means[d]), ("direction unknown", mix),
                            ("direction swapped", means[other[d]])):  # fmt: skip
                errs[name].append(float((w * (m - x) ** 2).sum() / w.sum()))
    rep = {k: float(np.mean(v)) for k, v in errs.items()}
    results["oracle_t999"] = rep
    print("\n### oracle clean-window error at t=999, first windows (per-prompt mean video)")
    for k, v in rep.items():
        print(f"- {k}: {v:.4f}")


def part_meanvideo(model, args, results):
    """The first step's prediction (t=999: pure-noise input, so ideally E[window | prompt]),
    averaged over seeds, against the true mean window of the world for that prompt: where
    along the prompted axis is the object's mass, in frame 0 and frame 11 (thirds, from the
    side it should start on)."""
    rng = np.random.default_rng([args.seed, 13])
    n = 24
    rep = {}
    print(
        "\n### t=999 prediction (mean of 24 seeds) vs the world's mean window: object mass in "
        "thirds along the heading [start third, middle, far third]"
    )
    print("| prompt | model frame 0 | model frame 11 | world frame 0 | world frame 11 |")
    print("|---|---|---|---|---|")
    for d in ("left", "right", "up", "down"):
        spec = SceneSpec("circle", "red", "black", d)
        prompt = f"on a black background, a red circle moving {d}"
        _, x0s = denoise(model, [prompt] * n, list(range(n)), 0,
                         [np.zeros((0, 128, 128, 3), np.uint8)] * n, keep_x0=True)  # fmt: skip
        mean_model = x0s[0].view(n, FRAMES, 3, 32, 32).mean(0)[:, 0]  # red plane
        clips = np.stack([make_clip(spec, rng, FRAMES, WORLD).frames for _ in range(200)])
        px = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        mean_world = model.to_low(px).view(200, FRAMES, 3, 32, 32).mean(0)[:, 0]
        h = HEADINGS[d]

        def thirds(a: torch.Tensor, f: int, h: tuple[float, float] = h) -> list[float]:
            m = (a[f] + 1) / 2  # black background -> 0
            prof = m.sum(0) if h[0] else m.sum(1)  # along x or along y
            prof = (prof / prof.sum()).numpy()
            parts = [prof[:11].sum(), prof[11:21].sum(), prof[21:].sum()]
            if (h[0] or h[1]) < 0:  # order from the side it should start on
                parts = parts[::-1]
            return [round(float(v), 2) for v in parts]

        row = {"model": [thirds(mean_model, 0), thirds(mean_model, 11)],
               "world": [thirds(mean_world, 0), thirds(mean_world, 11)]}  # fmt: skip
        rep[d] = row
        print(
            f"| {prompt} | {row['model'][0]} | {row['model'][1]} | {row['world'][0]} | "
            f"{row['world'][1]} |"
        )
    results["meanvideo"] = rep


def check_mirror(gen: EmbeddedGenerator) -> float:
    """Max pixel difference between `denoise` and the backend for one first window."""
    req = gen.resolve(GenerationRequest("a red circle moving left", seed=7, seconds=1.5))
    ref = gen.generate_windows([WindowTask(req, 0, np.zeros((0, 128, 128, 3), np.uint8))],
                               lambda *a: None)[0]  # fmt: skip
    ours = run_batched(gen.model, [("a red circle moving left", 7, 0,
                                    np.zeros((0, 128, 128, 3), np.uint8))])[0]  # fmt: skip
    return float(np.abs(ref.astype(int) - ours.astype(int)).max())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument(
        "--parts", default="recipe,windows,swap,settings,loss,oracle,sdedit,meanvideo"
    )
    parser.add_argument("--prompts", type=int, default=2, help="prompts per direction")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--swap-seeds", type=int, default=8)
    parser.add_argument("--loss-clips", type=int, default=8, help="clips per direction")
    parser.add_argument("--seed", type=int, default=4321)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--first-only", action="store_true", help="windows: skip continued")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = EmbeddedGenerator()
    if args.model is not None:  # a probe's model may carry coordinate planes
        from first_window_probe import load_probe

        gen.model, gen.model_path = load_probe(args.model), args.model
    model = gen.model.eval()
    results: dict = {"model": str(gen.model_path),
                     "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    results["mirror_max_pixel_diff"] = check_mirror(gen)
    print(f"model {gen.model_path}; sampler mirror max pixel diff vs backend: "
          f"{results['mirror_max_pixel_diff']}", flush=True)  # fmt: skip
    parts = args.parts.split(",")
    for name, fn in (("recipe", part_recipe), ("windows", part_windows), ("swap", part_swap),
                     ("settings", lambda m, a, r: part_windows(m, a, r, settings_only=True)),
                     ("loss", part_loss), ("oracle", part_oracle),
                     ("sdedit", part_sdedit), ("meanvideo", part_meanvideo)):  # fmt: skip
        if name in parts:
            started = time.perf_counter()
            fn(model, args, results)
            print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous.update(results)
    args.out.write_text(json.dumps(previous, indent=1, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
