"""The backend registry: a checkpoint is recognised by its `model_index.json` (or, for the
embedded model, its `config.json`), and `load_generator` needs no backend name for it."""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import pytest

from segment_pipeline.backends import REGISTRY, Backend, backend_for, load_generator
from segment_pipeline.backends.embedded import EmbeddedGenerator
from segment_pipeline.backends.ltx import LTX_PIPELINES, LTXGenerator
from segment_pipeline.backends.ltx2 import LTX2_PIPELINES
from segment_pipeline.embedded_model import DEFAULT_MODEL_DIR
from segment_pipeline.errors import InvalidRequest, ModelLoadError, PipelineError

from .ltx_tiny import build_tiny_ltx


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ltx(tmp_path_factory.mktemp("registry") / "tiny-ltx")


def index_dir(tmp_path: Path, class_name: object) -> Path:
    """A directory holding only a `model_index.json` naming `class_name`."""
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return tmp_path


def test_every_registered_pipeline_is_a_real_diffusers_class() -> None:
    for backend in REGISTRY:
        for pipeline in backend.pipelines:
            assert hasattr(diffusers, pipeline), f"{backend.name}: {pipeline}"


def test_the_registry_runs_what_the_ltx_backends_accept() -> None:
    by_name = {backend.name: backend for backend in REGISTRY}
    assert by_name["ltx"].pipelines == LTX_PIPELINES
    assert by_name["ltx2"].pipelines == LTX2_PIPELINES


@pytest.mark.parametrize(
    ("class_name", "backend"),
    [
        ("LTXConditionPipeline", "ltx"),
        ("LTX2Pipeline", "ltx2"),
        ("WanPipeline", "wan"),
        ("WanImageToVideoPipeline", "wan"),
        ("WanVideoToVideoPipeline", "wan"),
        ("SkyReelsV2DiffusionForcingPipeline", "skyreels"),
        ("SkyReelsV2DiffusionForcingImageToVideoPipeline", "skyreels"),
        ("HeliosPipeline", "helios"),
        ("HeliosPyramidPipeline", "helios"),
    ],
)
def test_model_index_class_names_the_backend(tmp_path: Path, class_name: str, backend: str) -> None:
    assert backend_for(index_dir(tmp_path, class_name)) == backend


def test_no_path_and_a_trained_directory_are_the_embedded_model() -> None:
    assert backend_for(None) == "embedded"
    assert backend_for(DEFAULT_MODEL_DIR) == "embedded"
    assert isinstance(load_generator(model_path=DEFAULT_MODEL_DIR), EmbeddedGenerator)


def test_a_tiny_ltx_checkpoint_loads_without_a_backend_name(ltx_dir: Path) -> None:
    assert backend_for(ltx_dir) == "ltx"
    generator = load_generator(model_path=ltx_dir)
    assert isinstance(generator, LTXGenerator)
    assert generator.describe()["backend"] == "ltx"


@pytest.mark.parametrize("class_name", ["StableDiffusionPipeline", None, 3])
def test_a_pipeline_no_backend_runs_is_a_model_load_error(
    tmp_path: Path, class_name: object
) -> None:
    with pytest.raises(ModelLoadError, match="no backend runs") as caught:
        backend_for(index_dir(tmp_path, class_name))
    assert caught.value.param == "model_path"


def test_a_directory_of_neither_kind_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"neither a model_index\.json") as caught:
        load_generator(model_path=tmp_path)
    assert caught.value.param == "model_path"
    with pytest.raises(ModelLoadError, match="not a directory"):
        backend_for(tmp_path / "missing")


def test_unreadable_model_index_is_a_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        backend_for(tmp_path)


def test_unknown_backend_name_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match="embedded, ltx, ltx2, wan, skyreels, helios"):
        load_generator("sora")


def test_a_diffusers_backend_needs_a_path() -> None:
    with pytest.raises(InvalidRequest, match="ltx backend needs model_path") as caught:
        load_generator("ltx")
    assert caught.value.param == "model_path"


def test_a_backend_whose_module_is_missing_is_a_model_load_error() -> None:
    absent = Backend("absent", "no_such_module", "NoGenerator", ("NoPipeline",))
    with pytest.raises(ModelLoadError, match="absent backend cannot be imported"):
        absent.generator_class()
    not_generator = Backend("odd", "registry", "Backend", ())
    with pytest.raises(ModelLoadError, match="not a SegmentedGenerator"):
        not_generator.generator_class()


def test_offload_is_for_a_diffusers_checkpoint_on_a_gpu(ltx_dir: Path) -> None:
    # What can be checked without a GPU: each refusal names `offload`. (Model and sequential
    # offload on a CUDA device: the command in docs/benchmarks.md, not yet run.)
    for backend, path, offload, says in (
        (None, ltx_dir, "model", "give a CUDA device"),
        (None, ltx_dir, "layers", "one of none, model, sequential"),
        ("embedded", None, "model", "not the embedded model"),
    ):
        with pytest.raises(PipelineError) as caught:
            load_generator(backend, path, offload=offload)
        assert caught.value.param == "offload" and says in str(caught.value)
    assert load_generator(None, ltx_dir, offload="none").name == ltx_dir.name
