"""The models one process serves (`streamgen.models`): ids, loading on first use, the
resident cap, what `/v1/models` says; and Redis workers that take only their models' jobs."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from segment_pipeline import GenerationRequest, SegmentedGenerator
from segment_pipeline.embedded_model import DEFAULT_MODEL_DIR
from streamgen.config import ConfigError, Settings
from streamgen.errors import InvalidParameter
from streamgen.jobs import Submission
from streamgen.models import ModelSet, ModelSource, parse_models
from streamgen.runtime import open_runtime
from tests.redis_server import running_redis
from tests.segment_pipeline.pattern import PatternGenerator
from tests.server import shared_generator
from tests.streamgen.jobs.test_worker_faults import log_of

TINY = str(DEFAULT_MODEL_DIR)  # an embedded checkpoint: recognised by its config.json


def test_models_setting_is_id_dir_pairs() -> None:
    assert parse_models(" a=/x , b=/y/z,") == (ModelSource("a", "/x"), ModelSource("b", "/y/z"))
    assert parse_models("") == ()
    for wrong, message in (("a", "ID=DIR"), ("=/x", "ID=DIR"), ("a=", "ID=DIR"),
                           ("a=/x,a=/y", "given twice")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            parse_models(wrong)


class Loads:
    """A loader that counts its loads (each a fresh test-pattern generator)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, source: ModelSource) -> SegmentedGenerator:
        with self.lock:
            self.count += 1
        return PatternGenerator()


def model_set(models: str, loads: Loads, **settings: object) -> ModelSet:
    return ModelSet(Settings().replace(models=models, **settings), PatternGenerator(), load=loads)


def test_a_request_chooses_a_served_model_or_gets_a_422() -> None:
    models = model_set(f"two={TINY}", Loads())
    assert models.default_id == "test-pattern"
    assert models.check(None) == "test-pattern" and models.check("two") == "two"
    with pytest.raises(InvalidParameter, match="not served here; choose one of") as caught:
        models.check("three")
    assert caught.value.param == "model"


def test_a_model_loads_on_first_use_once_even_when_asked_at_once() -> None:
    loads = Loads()
    models = model_set(f"two={TINY}", loads)
    assert loads.count == 0 and models.loaded("two") is None
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(models.pipeline("two")))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads.count == 1 and len({id(p) for p in got}) == 1
    assert models.loaded("two") is got[0]
    assert models.pipeline(None) is models.default and loads.count == 1


def test_past_the_cap_the_least_recently_used_model_is_dropped_never_the_default() -> None:
    loads = Loads()
    models = model_set(f"two={TINY},three={TINY}", loads, max_loaded_models=2)
    models.pipeline("two")
    models.pipeline("three")  # default + three: two goes
    assert models.loaded("two") is None and models.loaded("three") is not None
    assert models.loaded("test-pattern") is models.default
    models.pipeline("two")
    assert loads.count == 3 and models.loaded("three") is None


def test_model_cards_say_what_each_can_do_and_whether_it_is_loaded() -> None:
    models = model_set(f"two={TINY}", Loads())
    default, two = models.cards()
    assert default["id"] == "test-pattern" and default["default"] and default["loaded"]
    assert default["modes"] == ["t2v", "i2v", "extend"] and default["fps"] == 8
    assert default["frames_per_window"] == 6 and default["overlap_frames"] == 2
    assert default["sizes"]["default"] == "32x32" and default["batching"] is False
    assert two == {"id": "two", "backend": "embedded", "loaded": False, "default": False}
    models.pipeline("two")
    loaded = models.cards()[1]
    assert (
        loaded["id"] == "two" and loaded["loaded"] and loaded["modes"] == ["t2v", "i2v", "extend"]
    )


def test_the_embedded_model_declares_its_modes() -> None:
    card = ModelSet(Settings(), shared_generator()).cards()[0]
    assert card["modes"] == ["t2v", "i2v", "extend"]
    assert card["backend"] == "embedded"


def test_a_model_directory_nothing_runs_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model 'bad':.*neither a model_index\.json"):
        model_set(f"bad={tmp_path}", Loads())
    with pytest.raises(ConfigError, match="is the default model's"):
        model_set(f"test-pattern={TINY}", Loads())
    with pytest.raises(ConfigError, match="max_loaded_models must be >= 1"):
        model_set("", Loads(), max_loaded_models=0)


def test_model_id_names_the_default_model() -> None:
    models = ModelSet(Settings().replace(model_id="mine"), PatternGenerator())
    assert models.default_id == "mine" and models.cards()[0]["id"] == "mine"
    assert models.default.generator.name == "test-pattern"  # the generator is not renamed


async def workers_take_only_their_models(redis_url: str) -> None:
    shared = {"broker": redis_url, "calibrate_when_idle": False}
    api = await open_runtime(
        Settings().replace(embedded_worker=False, models=f"other={TINY}", **shared),
        role="serve",
        generator=PatternGenerator(),
    )
    pattern_worker = await open_runtime(
        Settings().replace(**shared), role="worker", generator=PatternGenerator()
    )
    other_worker = None
    try:
        manager = api.manager
        assert manager is not None
        embedded = (await asyncio.to_thread(api.models.pipeline, "other")).generator
        other = await manager.submit(
            embedded.resolve(GenerationRequest(prompt="a red ball", num_frames=12, seed=1)),
            Submission(request_scoped=False, priority=10, model="other"),
        )
        mine = await manager.submit(
            PatternGenerator().resolve(GenerationRequest(prompt="x", num_frames=12)),
            Submission(request_scoped=False),
        )
        events = await asyncio.wait_for(log_of(api, mine.id), 60)
        assert events[-1].type == "complete"
        # The first in the queue, yet left there: the only worker serves another model.
        waiting = await manager.get(other.id)
        assert waiting.state.status == "queued" and waiting.spec.model == "other"
        other_worker = await open_runtime(
            Settings().replace(model_id="other", **shared),
            role="worker",
            generator=shared_generator(),
        )
        events = await asyncio.wait_for(log_of(api, other.id), 60)
        assert events[-1].type == "complete"
        done = await manager.get(other.id)
        assert done.state.worker == other_worker.store.identity  # type: ignore[attr-defined]
    finally:
        for runtime in (other_worker, pattern_worker, api):
            if runtime is not None:
                await runtime.close()


def test_a_redis_worker_does_not_claim_another_models_job() -> None:
    with running_redis() as redis:
        asyncio.run(workers_take_only_their_models(redis.url))
