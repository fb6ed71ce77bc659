"""What the routes read while the app serves: the process's `Runtime` (model, broker, jobs),
the frame cache shared by subscribers, and the player's directory.

Built in the app's `before_serving` and kept on the app (``app.extensions["streamgen"]``),
never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quart import current_app, g

from segment_pipeline import SegmentedGenerator
from streamgen.broker.base import Broker
from streamgen.config import Settings
from streamgen.errors import JobNotFound, ServiceError, ServiceUnavailable
from streamgen.jobs import Job, JobManager
from streamgen.keys import ApiKey
from streamgen.runtime import Runtime
from streamgen.streams.follow import FrameCache

EXTENSION = "streamgen"


@dataclass
class AppState:
    runtime: Runtime
    frames: FrameCache
    static_dir: Path | None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def generator(self) -> SegmentedGenerator:
        return self.runtime.generator

    @property
    def broker(self) -> Broker:
        return self.runtime.broker

    @property
    def manager(self) -> JobManager:
        manager = self.runtime.manager
        assert manager is not None, "a serving runtime has a job manager"
        return manager


def app_state() -> AppState:
    """The running app's `AppState`; 503 while it is not (yet, or any more) serving."""
    state: AppState | None = current_app.extensions.get(EXTENSION)
    if state is None:
        raise ServiceUnavailable("the model is not loaded", code="not_ready")
    return state


def current_key() -> ApiKey | None:
    """The API key the request in this context was made with (`streamgen.auth`); None in
    open mode."""
    key: ApiKey | None = g.get("api_key")
    return key


def websocket_refusal() -> ServiceError | None:
    """Why the WebSocket in this context may not be used (its key), or None."""
    refusal: ServiceError | None = g.get("key_refusal")
    return refusal


async def visible_job(state: AppState, job_id: str) -> Job:
    """Job `job_id` as the request's API key may see it: its own jobs only (any job in
    open mode); another key's job is `JobNotFound`, as if it did not exist."""
    job = await state.manager.get(job_id)
    key = current_key()
    if key is not None and job.spec.charge.key_id != key.id:
        raise JobNotFound(job_id)
    return job
