"""Request bodies, retry policy, and what the client does when no server answers."""

import base64
import socket

import pytest
from streamgen_client import GenerateRequest, RetryPolicy, StreamClient, StreamInterrupted
from streamgen_client.stream_client import main


def refused_url() -> str:
    """A local URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_request_body_leaves_unset_fields_out_and_sends_the_image_base64():
    request = GenerateRequest(
        prompt="a red ball",
        width=64,
        height=48,
        num_inference_steps=2,
        seed=0,
        reference_image=b"\x89PNG...",
        extra={"priority": 5},
    )
    assert request.to_json() == {
        "prompt": "a red ball",
        "seed": 0,
        "width": 64,
        "height": 48,
        "num_inference_steps": 2,
        "priority": 5,
        "reference_image": base64.b64encode(b"\x89PNG...").decode(),
    }
    assert GenerateRequest(prompt="p", unbounded=True).to_json() == {
        "prompt": "p",
        "unbounded": True,
    }


def test_a_video_to_transform_is_sent_base64_with_its_strength():
    body = GenerateRequest(prompt="p", video=b"\x00\x00\x00\x18ftyp", strength=0.5).to_json()
    assert body == {
        "prompt": "p",
        "strength": 0.5,
        "video": base64.b64encode(b"\x00\x00\x00\x18ftyp").decode(),
    }


def test_a_size_goes_to_the_server_as_written():
    # The server reads "WxH" and the presets, and rounds to what its model makes.
    for size in ("1280x720", "720p"):
        assert GenerateRequest(prompt="p", size=size).to_json() == {"prompt": "p", "size": size}


def test_retry_policy_backs_off_exponentially_up_to_a_cap():
    policy = RetryPolicy(max_retries=6, initial_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay_s(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay_s(0, server_retry_ms=2000) == 2.0  # SSE `retry:` sets the first delay
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
def test_an_unreachable_server_is_retried_then_given_up(transport):
    policy = RetryPolicy(max_retries=2, initial_delay_s=0.0, max_delay_s=0.0)
    with StreamClient(refused_url(), retry=policy) as client:
        stream = client.generate(GenerateRequest(prompt="p"), transport=transport)
        with pytest.raises(StreamInterrupted, match="gave up after 3 failed attempts") as caught:
            next(stream)
    assert caught.value.job_id == "" and caught.value.last_seq == -1


def test_attach_to_an_unreachable_server_names_the_job():
    policy = RetryPolicy(max_retries=1, initial_delay_s=0.0, max_delay_s=0.0)
    with StreamClient(refused_url(), retry=policy) as client:
        stream = client.attach("job-9", from_seq=4)
        with pytest.raises(StreamInterrupted) as caught:
            next(stream)
    assert (caught.value.job_id, caught.value.last_seq) == ("job-9", 3)
    assert stream.reconnects == 1


def test_client_arguments_are_checked():
    with pytest.raises(ValueError, match="transport must be one of"):
        StreamClient("http://x").generate(GenerateRequest(prompt="p"), transport="udp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="from_seq"):
        StreamClient("http://x").attach("j", from_seq=-1)


def test_cli_refuses_size_with_width(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--prompt", "p", "--size", "64x64", "--width", "64"])
    assert exit_.value.code == 2
    assert "give --size or --width/--height, not both" in capsys.readouterr().err


def test_cli_reports_an_unreachable_server(capsys, tmp_path):
    code = main(
        [
            "--server",
            refused_url(),
            "--prompt",
            "p",
            "--retries",
            "0",
            "--quiet",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "streamgen-client: gave up after 1 failed attempt in a row: cannot connect" in err


def test_cli_refuses_a_server_url_without_scheme(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--prompt", "p", "--server", "localhost:8000"])
    assert exit_.value.code == 2
    assert "--server must start with http:// or https://" in capsys.readouterr().err
