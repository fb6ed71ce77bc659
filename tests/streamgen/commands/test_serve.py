"""`streamgen serve`: flags over settings, and HTTP/2 over TLS with --certfile/--keyfile."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from streamgen.cli import build_parser
from streamgen.commands.serve import settings_from
from streamgen.config import ConfigError, Settings
from streamgen.http_server import listening_socket
from tests.server import ServerThread


def test_flags_override_config_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9000\nmax_queued_jobs: 5\n")
    monkeypatch.setenv("STREAMGEN_MAX_QUEUED_JOBS", "7")
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--host", "0.0.0.0", "--broker", "redis://r:6379/0"]
    )
    settings = settings_from(args)
    assert (settings.host, settings.port, settings.broker) == ("0.0.0.0", 9000, "redis://r:6379/0")
    assert settings.max_queued_jobs == 7


def test_api_only_replica_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMGEN_EMBEDDED_WORKER", "true")
    api_only = build_parser().parse_args(["serve", "--no-embedded-worker"])
    assert settings_from(api_only).embedded_worker is False
    assert settings_from(build_parser().parse_args(["serve"])).embedded_worker is True


def test_a_certificate_needs_its_key() -> None:
    args = build_parser().parse_args(["serve", "--certfile", "cert.pem"])
    with pytest.raises(ConfigError, match="keyfile"):
        settings_from(args)


def test_unknown_setting_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMGEN_MAX_QUEUED", "7")
    with pytest.raises(ConfigError, match="STREAMGEN_MAX_QUEUED"):
        settings_from(build_parser().parse_args(["serve"]))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_http2_over_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ServerThread({"certfile": str(cert), "keyfile": str(key)})
    assert server.url.startswith("https://")
    try:
        server.start()
        with httpx.Client(http2=True, verify=False) as client:  # self-signed
            health = client.get(f"{server.url}/health")
        assert health.status_code == 200 and health.http_version == "HTTP/2"
        assert health.json()["streaming_supported"] is True
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "::1"])
def test_the_listening_socket_takes_names_and_addresses(host: str) -> None:
    if ":" in host and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sock = listening_socket(Settings(host=host, port=0))
    except OSError as exc:  # a machine without ::1 configured
        pytest.skip(f"cannot bind {host}: {exc}")
    try:
        assert sock.getsockname()[1] > 0
        lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        if lowat is not None:  # unsent bytes are bounded on every accepted connection
            assert sock.getsockopt(socket.IPPROTO_TCP, lowat) == Settings().send_buffer_bytes
    finally:
        sock.close()
