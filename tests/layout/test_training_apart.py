"""Serving never imports the embedded model's training (the procedural world, the trainers):
a server loads the model and its vocabulary only."""

from __future__ import annotations

from tests.layout.imports import graph
from tests.layout.test_layout import PACKAGES

TRAINING = "segment_pipeline.training"


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        for target in edges.get(module, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_serving_module_reaches_the_training_package() -> None:
    edges = graph(PACKAGES)
    training = {m for m in edges if m == TRAINING or m.startswith(TRAINING + ".")}
    assert {f"{TRAINING}.world", f"{TRAINING}.train", f"{TRAINING}.train_decoder"} <= training
    # The finder sees what the trainers import, so an empty answer below is not blindness.
    assert "segment_pipeline.embedded_model" in _reachable(edges, f"{TRAINING}.train")
    reaching = {
        module: sorted(_reachable(edges, module) & training)
        for module in edges
        if module not in training and _reachable(edges, module) & training
    }
    assert reaching == {}
