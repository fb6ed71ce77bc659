"""The client as its own distribution: `pip install ./clients` into a fresh virtual environment
(no system site packages) brings no torch, PyAV, numpy, Redis or server code, and its
`streamgen-client` command saves a video from a real server.

Slow-ish (a venv and a pip install, about 30 s); pip fetches httpx, websockets, msgpack and
tqdm from the configured index into a cache kept between runs.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import av
import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
PIP_CACHE = Path.home() / ".cache" / "pip"
HEAVY = ["torch", "diffusers", "quart", "av", "numpy", "redis", "segment_pipeline", "streamgen"]

# Run by the venv's python: which of the names it can find, and where the client comes from.
PROBE = """
import importlib.metadata, importlib.util, json, sys
found = {name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}
import streamgen_client
print(json.dumps({
    "found": found,
    "client_file": streamgen_client.__file__,
    "requires": sorted(importlib.metadata.requires("streamgen-client") or []),
}))
"""


def isolated_env() -> dict[str, str]:
    """This process's environment without anything that would put the repo or the test
    environment's packages on the venv's path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE"}
    return {key: value for key, value in os.environ.items() if key not in drop}


def run(command: list[str | Path], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd, env=isolated_env(), capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def test_importing_the_client_loads_no_av_numpy_or_torch_even_when_installed() -> None:
    # In this environment they are installed (the server needs them); the client must still
    # not pull them in, as it did when it borrowed the server's MP4 box reader.
    probe = (
        "import streamgen_client, sys; "
        "print([m for m in ('av', 'numpy', 'torch') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `clients/` pip-installed (not editable); returns its bin directory."""
    root = tmp_path_factory.mktemp("client-dist")
    # Build from a copy: an in-place build would leave build/ and egg-info in the checkout.
    source = root / "clients"
    shutil.copytree(
        CLIENTS, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist")
    )
    run([sys.executable, "-m", "venv", root / "venv"], cwd=root, timeout_s=120)
    bin_dir = root / "venv" / "bin"
    run(
        [bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "--cache-dir", PIP_CACHE, source],
        cwd=root, timeout_s=300,
    )  # fmt: skip
    return bin_dir


@pytest.mark.timeout(600)
def test_the_installed_client_brings_nothing_of_the_server(venv: Path, tmp_path: Path) -> None:
    # cwd is not the checkout: from there `streamgen` would be importable as a directory.
    probe = run([venv / "python", "-c", PROBE, *HEAVY], cwd=tmp_path, timeout_s=60)
    seen = json.loads(probe.stdout)
    assert seen["found"] == dict.fromkeys(HEAVY, False)
    assert Path(seen["client_file"]).is_relative_to(venv.parent), "not the installed copy"
    assert seen["requires"] == ["httpx>=0.27", "msgpack>=1.0", "tqdm>=4.66", "websockets>=13"]


@pytest.mark.timeout(600)
def test_the_installed_command_saves_a_video(venv: Path, server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    run(
        [venv / "streamgen-client", "--server", server_url,
         "--prompt", "a red ball moving left", "--size", "64x64", "--num-frames", "28",
         "--steps", "2", "--seed", "11", "--transport", "sse",
         "--concatenate", out, "--output-dir", tmp_path / "segments"],  # with its progress bar
        cwd=tmp_path, timeout_s=120,
    )  # fmt: skip
    with av.open(io.BytesIO(out.read_bytes())) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 28
    assert {(frame.width, frame.height) for frame in frames} == {(64, 64)}
    segments = tmp_path / "segments"
    fragments = sorted(segments.glob("fragment_*.m4s"))
    assert fragments, "no segment files"
    joined = (segments / "init.mp4").read_bytes() + b"".join(f.read_bytes() for f in fragments)
    assert joined == out.read_bytes()


def test_the_server_depends_on_the_client_and_every_install_brings_both() -> None:
    """The server imports the wire format from the client distribution, so each documented
    install names ./clients in the same pip command as the server: pip then takes
    streamgen-client from there instead of looking for it on an index."""
    repo = CLIENTS.parent
    name = tomllib.loads((CLIENTS / "pyproject.toml").read_text())["project"]["name"]
    server = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    assert name in server
    readme = (repo / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") :].split("```")[1]
    ci = (repo / ".ci" / "run").read_text()
    dockerfile = (repo / "docker" / "Dockerfile").read_text()
    for where, text in (("README", quick_start), (".ci/run", ci), ("Dockerfile", dockerfile)):
        server_install = re.compile(r"pip install .*-e '?\.[\[' ]")
        installs = [line for line in text.splitlines() if server_install.search(line)]
        assert installs, f"{where}: no install of the server"
        assert all("-e ./clients" in line for line in installs), (where, installs)
