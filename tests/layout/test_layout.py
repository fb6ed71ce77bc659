"""The shape of the source tree: no import circles, files a reader can hold in mind, and a
client that stands alone."""

from __future__ import annotations

from pathlib import Path

from tests.layout.imports import cycles, graph, modules

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [(REPO, "streamgen"), (REPO, "segment_pipeline"), (REPO / "clients", "streamgen_client")]
MAX_LINES = 500


def test_the_cycle_finder_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_round_a_circle() -> None:
    edges = graph(PACKAGES)
    assert len(edges) > 60, "the packages were not found"
    # Relative and package imports resolve to the modules they name.
    assert "streamgen.jobs.record" in edges["streamgen.jobs.manager"]  # from .record import
    assert "streamgen.jobs" in edges["streamgen.routes.state"]  # from streamgen.jobs import
    assert "segment_pipeline.fmp4" in edges["segment_pipeline.encoder"]  # from . import fmp4
    assert cycles(edges) == []


def test_no_source_file_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in modules(PACKAGES).values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_client_imports_nothing_of_the_server() -> None:
    edges = graph(PACKAGES)
    client = {m: targets for m, targets in edges.items() if m.startswith("streamgen_client")}
    assert client, "the client package was not found"
    for module, targets in client.items():
        assert all(t.startswith("streamgen_client") for t in targets), (module, targets)
    for path in modules([(REPO / "clients", "streamgen_client")]).values():
        text = path.read_text(encoding="utf-8")
        for server in ("import segment_pipeline", "from segment_pipeline", "from streamgen ",
                       "from streamgen.", "import streamgen\n", "import streamgen."):  # fmt: skip
            assert server not in text, (path.name, server)


def test_only_the_app_factory_imports_the_routes() -> None:
    """The routes sit on top: what they call (streams, openapi, auth) never imports them back."""
    edges = graph(PACKAGES)
    importers = {
        module
        for module, targets in edges.items()
        if not module.startswith("streamgen.routes")
        and any(t == "streamgen.routes" or t.startswith("streamgen.routes.") for t in targets)
    }
    assert importers == {"streamgen.app"}
    assert "streamgen.routespec" in edges["streamgen.openapi"]


def test_the_tests_mirror_the_source_folders() -> None:
    """A test folder stands where its code stands: tests/streamgen/jobs for streamgen/jobs,
    tests/static for static/, tests/docker for docker/ (tests/layout and tests/scaleout,
    which tests processes on one Redis, are the two that test the whole)."""
    tests = REPO / "tests"
    whole = {"layout", "scaleout"}
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        relative = folder.relative_to(tests)
        if relative.parts[0] in whole:
            continue
        source = REPO / relative
        if relative.parts[0] == "clients":
            source = REPO / "clients" / "streamgen_client" / Path(*relative.parts[1:])
        assert source.is_dir(), f"tests/{relative} has no source folder {source.relative_to(REPO)}"
