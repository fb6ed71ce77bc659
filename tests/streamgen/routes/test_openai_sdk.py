"""The official `openai` Python SDK against `/v1/videos`, unchanged: create (multipart, with
and without an `input_reference` file), poll by the server's hint, download each variant,
list with cursor pages, remix, delete, and the errors it raises for what is refused."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI
from PIL import Image

from streamgen.keys import FileKeyStore, KeyPolicy, new_key
from tests.server import running_server

PROMPT = "a red ball moving right"
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_server() as url:  # its own server: the list test counts every video
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="sk-anything", max_retries=0)


@pytest.fixture(scope="module")
def finished(client: OpenAI) -> openai.types.Video:
    return client.videos.create_and_poll(prompt=PROMPT, seconds="4")


def test_create_and_poll_then_download(client: OpenAI, finished: openai.types.Video) -> None:
    assert finished.status == "completed" and finished.progress == 100
    assert (finished.seconds, finished.size) == ("4", "128x128")
    assert finished.completed_at is not None and finished.completed_at >= finished.created_at
    done = client.videos.with_raw_response.retrieve(finished.id)
    assert "openai-poll-after-ms" not in done.headers  # nothing left to wait for
    data = client.videos.download_content(finished.id).read()
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 32 and frames[0].shape == (128, 128, 3)


def test_thumbnail_and_spritesheet(client: OpenAI, finished: openai.types.Video) -> None:
    thumb = Image.open(
        io.BytesIO(client.videos.download_content(finished.id, variant="thumbnail").read())
    )
    assert (thumb.format, thumb.size) == ("JPEG", (128, 128))
    sprites = client.videos.download_content(finished.id, variant="spritesheet").read()
    sheet = Image.open(io.BytesIO(sprites))
    assert (sheet.format, sheet.size) == ("JPEG", (4 * 160, 4 * 160))  # 16 frames, 4 a row


def test_an_input_reference_file_becomes_frame_zero(client: OpenAI) -> None:
    image = io.BytesIO()
    Image.new("RGB", (128, 128), (20, 200, 40)).save(image, "PNG")
    video = client.videos.create_and_poll(
        prompt="a ball", seconds="4", input_reference=("green.png", image.getvalue(), "image/png")
    )
    assert video.status == "completed", video.error
    thumb = Image.open(
        io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").read())
    )
    mean = np.asarray(thumb.convert("RGB"), np.float32).mean(axis=(0, 1))
    assert np.abs(mean - (20, 200, 40)).max() < 12, mean


def test_the_poll_hint_while_a_video_is_made(base_url: str, client: OpenAI) -> None:
    video = client.videos.create(prompt=PROMPT, seconds="12")
    try:
        response = httpx.get(f"{base_url}/v1/videos/{video.id}")
        assert response.json()["status"] in ("queued", "in_progress")  # 12 s take a while
        assert 250 <= int(response.headers["openai-poll-after-ms"]) <= 5000
    finally:
        client.videos.delete(video.id)


def test_list_pages_remix_and_delete(client: OpenAI, finished: openai.types.Video) -> None:
    remix = client.videos.remix(finished.id, prompt="a blue square moving left")
    assert remix.remixed_from_video_id == finished.id
    assert remix.prompt == "a blue square moving left" and remix.size == finished.size
    first = client.videos.list(limit=1)
    assert [v.id for v in first.data] == [remix.id] and first.has_more  # newest first
    every = [v.id for v in client.videos.list(limit=1)]  # the SDK follows the cursor
    assert every[0] == remix.id and finished.id in every and len(every) == len(set(every))
    oldest_first = [v.id for v in client.videos.list(limit=100, order="asc")]
    assert oldest_first == every[::-1]

    deleted = client.videos.delete(remix.id)  # still being made: cancelled, then deleted
    assert (deleted.id, deleted.deleted, deleted.object) == (remix.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(remix.id)
    assert remix.id not in [v.id for v in client.videos.list(limit=100)]


def test_a_queued_video_is_deleted_at_once() -> None:
    with running_server({"max_concurrent_jobs": 1}) as url:
        busy = httpx.post(f"{url}/v1/videos", json={"prompt": PROMPT, "seconds": "60"}).json()
        queued = httpx.post(f"{url}/v1/videos", json={"prompt": PROMPT, "seconds": "4"}).json()
        assert httpx.get(f"{url}/v1/videos/{queued['id']}").json()["status"] == "queued"
        for video in (queued, busy):  # queued: cancelled and gone; running: stopped first
            deleted = httpx.delete(f"{url}/v1/videos/{video['id']}", timeout=60)
            assert deleted.status_code == 200, deleted.text  # the first time, no retry
            assert httpx.get(f"{url}/v1/videos/{video['id']}").status_code == 404
        jobs_only = httpx.post(f"{url}/v1/jobs", json={"prompt": PROMPT, "seconds": 1}).json()
        listed = httpx.get(f"{url}/v1/videos").json()["data"]
        assert jobs_only["id"] not in {v["id"] for v in listed}  # only videos are listed


def test_what_is_refused_names_the_field(client: OpenAI, base_url: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as too_big:
        client.videos.create(prompt=PROMPT, size="1792x1024")
    assert too_big.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as model:
        client.videos.create(prompt=PROMPT, model="sora-2")
    assert model.value.body["param"] == "model"  # type: ignore[index]
    variant = httpx.get(f"{base_url}/v1/videos/anything/content", params={"variant": "gif"})
    assert variant.status_code == 422 and variant.json()["error"]["param"] == "variant"
    by_id = httpx.post(
        f"{base_url}/v1/videos", json={"prompt": PROMPT, "input_reference": {"file_id": "file_1"}}
    )
    assert by_id.status_code == 422 and by_id.json()["error"]["param"] == "input_reference"
    fetched = httpx.post(
        f"{base_url}/v1/videos",
        json={"prompt": PROMPT, "input_reference": {"image_url": "https://example.com/a.png"}},
    )
    assert fetched.status_code == 422 and "fetches nothing" in fetched.json()["error"]["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.videos.list(after="job_unknown")
    for limit in ("0", "101", "²", "9" * 5000):
        page = httpx.get(f"{base_url}/v1/videos", params={"limit": limit})
        assert page.status_code == 422 and page.json()["error"]["param"] == "limit"


def test_the_sdk_with_api_keys(tmp_path: Path) -> None:
    """On a server with keys the SDK's own `api_key` is the key: a wrong one is the SDK's
    `AuthenticationError`, a policy refusal its `PermissionDeniedError` (naming the field)."""
    store = FileKeyStore(tmp_path / "keys.json")
    key, secret = new_key("sdk", KeyPolicy(max_seconds=4))
    asyncio.run(store.add(key))
    with running_server({"keys_file": str(store.path)}) as url:
        wrong = OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.videos.list()
        keyed = OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            keyed.videos.create(prompt=PROMPT, seconds="8")
        assert refused.value.body["param"] == "seconds"  # type: ignore[index]
        video = keyed.videos.create_and_poll(prompt=PROMPT, seconds="4")
        assert video.status == "completed"
        assert [v.id for v in keyed.videos.list()] == [video.id]
