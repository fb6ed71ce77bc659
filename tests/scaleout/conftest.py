"""Scale-out tests: real `streamgen serve` / `streamgen worker` processes on a private
redis-server (tests/scaleout/cluster.py). A failing test's report gets the processes' logs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.scaleout.cluster import Cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        report.sections.append(("streamgen processes", cluster.logs()))
