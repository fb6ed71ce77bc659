"""`streamgen generate` end to end: a real model, a real file, decoded back."""

import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from streamgen.cli import main

FAST = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "5", "--quiet"]


def decode(path):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        duration = container.duration / 1e6
    return frames, duration


def test_generate_writes_a_playable_mp4_and_segments(tmp_path):
    out = tmp_path / "x.mp4"
    segments = tmp_path / "segs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamgen",
            "generate",
            "--prompt",
            "a red ball moving right",
            "--seconds",
            "2",
            "-o",
            str(out),
            "--segments-dir",
            str(segments),
            *FAST,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    frames, duration = decode(out)
    assert len(frames) == 16 and frames[0].shape == (64, 64, 3)
    assert duration == pytest.approx(2.0)
    names = sorted(p.name for p in segments.iterdir())
    assert names == ["init.mp4", "segment_0000.m4s", "segment_0001.m4s"]
    joined = b"".join((segments / n).read_bytes() for n in names)
    assert joined == out.read_bytes()


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (["--size", "720p"], "width"),  # over the embedded model's 512x512
        (["--width", "4096"], "width"),
        (["--size", "big"], "size"),
        (["--size", "64x64", "--width", "64"], "size"),
        (["--seconds", "0"], "seconds"),
        (["--seconds", "-2"], "seconds"),
        (["--overlap-frames", "12"], "overlap_frames"),
        (["--backend", "nope"], "backend"),
        (["--reference-image", "/nonexistent.png"], "reference_image"),
        (["--audio", "/nonexistent.wav"], "audio"),
        (["--audio", __file__], "audio"),
        (["--video", "/nonexistent.mp4"], "video"),
        (["--strength", "0.5"], "strength"),  # with no video to transform
    ],
)
def test_bad_input_names_the_parameter_and_leaves_no_file(tmp_path, capsys, args, param):
    out = tmp_path / "bad.mp4"
    code = main(["generate", "--prompt", "p", "-o", str(out), "--quiet", *args])
    assert code != 0
    assert f"parameter: {param}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_video_is_refused_by_a_model_without_video_to_video(tmp_path, capsys):
    video = tmp_path / "in.mp4"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(4):
            picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), "rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    out = tmp_path / "out.mp4"
    code = main(["generate", "--prompt", "p", "-o", str(out), "--video", str(video), *FAST])
    assert code != 0
    err = capsys.readouterr().err
    assert "parameter: video" in err and "cannot do video to video" in err
    assert not out.exists()


def test_a_size_off_the_multiple_is_made_at_the_nearest(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    args = ["--size", "70x60", "--num-frames", "12", "--steps", "1", "--seed", "2", "--quiet"]
    assert main(["generate", "--prompt", "a ball", "-o", str(out), *args]) == 0
    frames, _ = decode(out)
    assert len(frames) == 12 and frames[0].shape == (64, 64, 3)  # multiples of 16


def test_reference_image_becomes_frame_zero(tmp_path, capsys):
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40] = (0, 255, 0)
    path = tmp_path / "ref.png"
    Image.fromarray(image).save(path)
    out = tmp_path / "ref.mp4"
    code = main(
        [
            "generate",
            "--prompt",
            "a green box",
            "--num-frames",
            "4",
            "--reference-image",
            str(path),
            "-o",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    frames, _ = decode(out)
    assert len(frames) == 4
    assert np.abs(frames[0].astype(int) - image.astype(int)).mean() < 8


def test_model_path_that_is_not_a_model_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code = main(["generate", "--prompt", "p", "--model-path", str(tmp_path), "-o", str(out)])
    assert code != 0 and not out.exists()
    assert "config.json" in capsys.readouterr().err


def test_audio_gives_the_file_its_sound_track_and_length(tmp_path, capsys):
    from tests.segment_pipeline.test_audio import clicks, onsets, wav_bytes

    path = tmp_path / "voice.wav"
    path.write_bytes(wav_bytes(clicks(2, 44100, channels=2), 44100))
    out = tmp_path / "voiced.mp4"
    code = main(["generate", "--prompt", "a red ball", "--audio", str(path), "-o", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert frames == 16  # 2 s of audio at 8 fps
    assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 2.0) < 0.03
    assert max(abs(offset) for offset in onsets(audio[0], 2)) <= 4
