"""What an operator sees: `/metrics` (Prometheus text) counting a real stream's requests,
segments and outcome; request ids; the access log; JSON log lines with request and job ids.

Metrics are per process and this test process runs several servers, so the checks read
the difference a request makes."""

from __future__ import annotations

import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamgen.observability import JsonFormatter, configure_logging
from tests.streamgen.conftest import Lines
from tests.streamgen.stream_reading import SMALL


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_a_stream(server_url: str) -> None:
    before = samples(server_url)
    with httpx.stream("POST", f"{server_url}/generate-stream", json=SMALL, timeout=120) as stream:
        assert stream.status_code == 200
        body = b"".join(stream.iter_bytes())
    assert b"event: complete" in body
    after = samples(server_url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    route = {"route": "/generate-stream", "method": "POST", "status": "200"}
    assert grew("streamgen_http_requests_total", **route) >= 1
    assert grew("streamgen_http_sent_bytes_total", route="/generate-stream") >= len(body)
    assert grew("streamgen_time_to_first_segment_seconds_count") >= 1
    segments = body.count(b"event: segment")
    assert grew("streamgen_segment_generate_seconds_count") >= segments > 0
    assert grew("streamgen_segment_encode_seconds_count") >= segments
    assert grew("streamgen_jobs_finished_total", outcome="completed") >= 1
    assert grew("streamgen_realtime_factor_count") >= 1
    for gauge in ("streamgen_queue_depth", "streamgen_running_jobs", "streamgen_subscribers"):
        assert (gauge, ()) in after


def test_unknown_paths_share_one_label(server_url: str) -> None:
    before = samples(server_url)
    for path in ("/no/such/a", "/no/such/b", "/v1/jobs/job_x/nothing"):
        assert httpx.get(f"{server_url}{path}").status_code == 404
    after = samples(server_url)
    key = ("streamgen_http_requests_total",
           (("method", "GET"), ("route", "unmatched"), ("status", "404")))  # fmt: skip
    assert after[key] - before.get(key, 0.0) == 3
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in after)


def test_request_ids_and_the_access_log(server_url: str, access_lines: Lines) -> None:
    given = httpx.get(f"{server_url}/health", headers={"X-Request-Id": "probe-42"})
    assert given.headers["x-request-id"] == "probe-42"
    made = httpx.get(f"{server_url}/health").headers["x-request-id"]
    assert made and made != "probe-42"
    job = httpx.post(f"{server_url}/v1/jobs", json=SMALL).json()
    httpx.get(f"{server_url}/v1/jobs/{job['id']}")

    mine = [line for line in access_lines.lines if line.get("request_id") == "probe-42"]
    assert len(mine) == 1
    assert mine[0]["access"]["route"] == "/health" and mine[0]["access"]["status"] == 200
    assert mine[0]["access"]["bytes"] == len(given.content)
    lookups = [line for line in access_lines.lines if line["access"]["method"] == "GET"
               and line["access"]["path"] == f"/v1/jobs/{job['id']}"]  # fmt: skip
    assert lookups and lookups[0]["job_id"] == job["id"]


def test_configure_logging_refuses_an_unknown_format() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(ValueError, match="log_format"):
            configure_logging("info", "xml")
        configure_logging("info", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
