"""A schema fuzzer against a real server: every operation of `/openapi.json` gets generated
requests, valid and invalid (schemathesis), and none may answer 5xx.

The server runs with small caps so that the valid requests among them (which make real
videos) stay short: 64x64 at most, 24 frames, 2 steps, unbounded streams end after 2 s of
video, and live streams are not paced to real time.
The example count is bounded and the generation derandomized, so a run takes the same
requests each time.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.server import ServerThread

EXAMPLES = 12  # a bound per operation and body type, to keep the suite short

CAPS = {
    "max_width": 64,
    "max_height": 64,
    "max_frames": 24,
    "max_inference_steps": 2,
    "max_unbounded_seconds": 2.0,
    "max_queued_jobs": 16,
    "max_body_bytes": 256 * 1024,
    "write_timeout_seconds": 5.0,
    "calibrate_when_idle": False,
    # Live streams run flat out: at 1 fps, 24 frames are 24 s of video, which the scheduler
    # would otherwise pace to its viewer's playback.
    "live_max_ahead_seconds": 1e6,
    "live_lead_seconds": 1e6,
}


SERVER_SETTINGS = CAPS


@pytest.fixture(scope="module")
def api_schema(server: ServerThread) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
