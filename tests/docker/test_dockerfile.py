"""docker/Dockerfile and .dockerignore agree with the CLI, the settings and the repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from streamgen.config import Settings

from .manifests import (
    DOCKER,
    REPO,
    SETTING_NAMES,
    DeployFileError,
    Instruction,
    dockerignore_patterns,
    effective_settings,
    env_instructions,
    exec_form,
    is_ignored,
    parse_dockerfile,
)

DOCKERFILE = DOCKER / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in {DOCKERFILE}, found {len(found)}"
    return found[0]


def image_argv(instructions: list[Instruction]) -> list[str]:
    """ENTRYPOINT + CMD, without the leading `streamgen`."""
    entrypoint = exec_form(only(instructions, "ENTRYPOINT").text)
    assert entrypoint == ["streamgen"]
    return exec_form(only(instructions, "CMD").text)


def test_parser_reads_continuations_args_and_env() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE}\n"
        "# a comment\n"
        "ENV A=1 \\\n"
        "    B=two\n"
        "RUN echo $BASE \\\n"
        "    # dropped\n"
        "    && true\n"
    )
    parsed = parse_dockerfile(text)
    assert [i.keyword for i in parsed] == ["ARG", "FROM", "ENV", "RUN"]
    assert parsed[1].text == "python:3.11-slim"
    assert parsed[3].text == "echo python:3.11-slim && true"
    assert env_instructions(parsed) == {"A": "1", "B": "two"}
    with pytest.raises(DeployFileError, match="continued line"):
        parse_dockerfile("RUN echo \\\n")


def test_base_image_and_cpu_torch(instructions: list[Instruction]) -> None:
    assert only(instructions, "FROM").text == "python:3.11-slim"
    torch_runs = [i.text for i in instructions if i.keyword == "RUN" and "torch==" in i.text]
    assert len(torch_runs) == 1
    assert "--index-url" in torch_runs[0]
    assert "https://download.pytorch.org/whl/cpu" in torch_runs[0]
    assert "torch==2.13.0" in torch_runs[0]


def test_user_is_not_root(instructions: list[Instruction]) -> None:
    users = [i.text for i in instructions if i.keyword == "USER"]
    assert users, "the image must switch to an unprivileged user"
    assert users[-1] not in {"root", "0", "0:0"}
    # Nothing after the last USER runs as root again.
    last = max(n for n, i in enumerate(instructions) if i.keyword == "USER")
    assert not any(i.keyword == "RUN" for i in instructions[last:])


def test_entrypoint_is_the_console_script(instructions: list[Instruction]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["streamgen"] == "streamgen.cli:main"
    assert exec_form(only(instructions, "ENTRYPOINT").text) == ["streamgen"]


def test_cmd_parses_and_serves_on_the_exposed_port(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    argv = image_argv(instructions)
    args, settings = effective_settings(
        argv, env_instructions(instructions), {}, tmp_path, where=str(DOCKERFILE)
    )
    assert args.command == "serve"
    assert settings.host == "0.0.0.0"
    exposed = only(instructions, "EXPOSE").text.split()
    assert exposed == [f"{settings.port}/tcp"] or exposed == [str(settings.port)]
    assert settings.port == Settings().port == 8000


def test_healthcheck_asks_health_on_the_served_port(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    check = only(instructions, "HEALTHCHECK").text
    options, _, command = check.partition("CMD ")
    for option in ("--interval", "--timeout", "--start-period", "--retries"):
        assert option in options
    argv = exec_form(command.strip())
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<HEALTHCHECK>", "exec")  # the one-liner is valid Python
    match = re.search(r"http://(127\.0\.0\.1|localhost):(\d+)(/[^'\"]*)", argv[2])
    assert match, f"no local URL in the health check: {argv[2]!r}"
    _, settings = effective_settings(
        image_argv(instructions), env_instructions(instructions), {}, tmp_path, "Dockerfile"
    )
    assert int(match.group(2)) == settings.port
    assert match.group(3) == "/health"


def test_env_names_are_settings(instructions: list[Instruction], tmp_path: Path) -> None:
    env = env_instructions(instructions)
    for name in env:
        if name.startswith("STREAMGEN_") and name != "STREAMGEN_CONFIG":
            assert name.removeprefix("STREAMGEN_").lower() in SETTING_NAMES, name
    # Every STREAMGEN_* value loads too (a bad one is a ConfigError naming it).
    effective_settings(image_argv(instructions), env, {}, tmp_path, "Dockerfile ENV")


def test_copied_sources_exist_and_are_in_the_context(instructions: list[Instruction]) -> None:
    patterns = dockerignore_patterns((REPO / ".dockerignore").read_text())
    copied: list[str] = []
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = [w for w in ins.text.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not is_ignored(source, patterns), f"COPY {source}: left out by .dockerignore"
            copied.append(source.rstrip("/"))
    needed_sources = ("pyproject.toml", "README.md", "clients", "segment_pipeline", "streamgen")
    for needed in (*needed_sources, "static"):
        assert needed in copied, f"the image needs {needed}"


def test_shipped_weights_and_player_reach_the_image() -> None:
    patterns = dockerignore_patterns((REPO / ".dockerignore").read_text())
    weights = sorted((REPO / "segment_pipeline" / "models").glob("*/*"))
    assert any(p.name == "model.safetensors" for p in weights)
    for path in [*weights, REPO / "static" / "index.html"]:
        rel = path.relative_to(REPO).as_posix()
        assert not is_ignored(rel, patterns), f"{rel} is left out by .dockerignore"


def test_dockerignore_keeps_heavy_and_private_things_out() -> None:
    patterns = dockerignore_patterns((REPO / ".dockerignore").read_text())
    for rel in (".git/HEAD", "runs/x/ckpt.pt", "streamgen/__pycache__/a.pyc", "out/x.mp4"):
        assert is_ignored(rel, patterns), rel
    assert not is_ignored("streamgen/cli.py", patterns)


def test_dockerignore_matcher() -> None:
    assert is_ignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert is_ignored("x.egg-info/PKG-INFO", ["*.egg-info"])
    assert not is_ignored("segment_pipeline/models/m/model.safetensors", ["**/*.mp4", "runs"])
    with pytest.raises(DeployFileError):
        is_ignored("x", ["!x"])


def test_the_client_distribution_is_installed_with_the_server(
    instructions: list[Instruction],
) -> None:
    """The server depends on streamgen-client (the wire format): the dependency layer leaves
    it out (it is not on an index) and one command installs ./clients beside the server."""
    runs = [i.text for i in instructions if i.keyword == "RUN"]
    deps = [text for text in runs if "requirements.txt" in text]
    assert len(deps) == 1 and "clients/pyproject.toml" in deps[0]
    assert "not d.startswith('streamgen-client')" in deps[0]
    installs = [text for text in runs if "-e ." in text]
    assert len(installs) == 1 and "-e ./clients -e ." in installs[0]
