"""What the app keeps while serving: settings, the loaded model, the broker and the jobs.

Built in the app's `before_serving` and kept on the app (``app.extensions["streamgen"]``),
never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quart import current_app

from segment_pipeline import SegmentedGenerator

from .broker.base import Broker
from .config import Settings
from .errors import ServiceUnavailable
from .jobs import JobManager
from .streaming import FrameCache

EXTENSION = "streamgen"


@dataclass
class Service:
    settings: Settings
    generator: SegmentedGenerator
    broker: Broker
    manager: JobManager
    frames: FrameCache
    static_dir: Path | None


def current_service() -> Service:
    """The running app's `Service`; 503 while it is not (yet, or any more) serving."""
    service: Service | None = current_app.extensions.get(EXTENSION)
    if service is None:
        raise ServiceUnavailable("the model is not loaded", code="not_ready")
    return service
