"""docker/compose.yaml and docker/nginx.conf agree with the CLI, the settings, the image and
each other (ports, Redis address, proxy upstreams, stop grace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamgen.config import Settings

from .manifests import (
    DOCKER,
    REPO,
    SETTING_NAMES,
    duration_seconds,
    effective_settings,
    env_instructions,
    exec_form,
    nginx_directives,
    nginx_size_bytes,
    nginx_upstreams,
    parse_dockerfile,
    redis_address,
    redis_server_port,
)

COMPOSE = DOCKER / "compose.yaml"
NGINX = DOCKER / "nginx.conf"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    return compose["services"]


def streamgen_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from docker/Dockerfile."""
    return {n: s for n, s in services.items() if "build" in s}


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """The image's ENV, then the service's `environment` (compose wants string values)."""
    env = env_instructions(parse_dockerfile((DOCKER / "Dockerfile").read_text()))
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "use the mapping form of environment"
    for key, value in environment.items():
        assert isinstance(value, str), f"{key}: quote compose environment values ({value!r})"
        env[key] = value
    return env


def run_settings(name: str, service: dict[str, Any], scratch: Path) -> tuple[str, Settings]:
    """The subcommand and settings of a streamgen service (ENTRYPOINT is `streamgen`)."""
    assert "entrypoint" not in service, f"{name}: keep the image's entrypoint"
    argv = service["command"]
    assert isinstance(argv, list), f"{name}: use the exec (list) form of command"
    args, settings = effective_settings(
        argv, container_env(service), {}, scratch, where=f"{COMPOSE}: {name}"
    )
    return args.command, settings


def container_ports(service: dict[str, Any]) -> list[int]:
    """Container-side ports of a service's `ports` ("[ip:]host:container" strings)."""
    return [int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])]


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "api-a", "api-b", "proxy", "worker", "worker-gpu"} <= set(services)


def test_build_context_is_the_repository(services: dict[str, dict[str, Any]]) -> None:
    built = streamgen_services(services)
    assert len(built) >= 4
    for name, service in built.items():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == REPO, name
        assert (context / service["build"]["dockerfile"]).is_file(), name


def test_env_names_are_settings_and_load(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name, service in streamgen_services(services).items():
        for key in service.get("environment", {}):
            if key.startswith("STREAMGEN_") and key != "STREAMGEN_CONFIG":
                assert key.removeprefix("STREAMGEN_").lower() in SETTING_NAMES, (name, key)
        run_settings(name, service, tmp_path)  # loads every value, parses the command


def test_api_replicas_serve_on_their_container_port_without_a_worker(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name in ("api-a", "api-b"):
        command, settings = run_settings(name, services[name], tmp_path)
        assert command == "serve"
        assert settings.host == "0.0.0.0"
        assert not settings.embedded_worker
        assert container_ports(services[name]) == [settings.port]


def test_workers_run_the_worker_command(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name in ("worker", "worker-gpu"):
        command, _ = run_settings(name, services[name], tmp_path)
        assert command == "worker", name
        # The image's HEALTHCHECK asks /health, which a worker does not serve.
        assert services[name]["healthcheck"] == {"disable": True}, name
        assert "ports" not in services[name]


def test_serving_services_keep_the_image_healthcheck(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for name, service in streamgen_services(services).items():
        command, _ = run_settings(name, service, tmp_path)
        if command == "serve":
            assert "healthcheck" not in service, f"{name}: the image's check applies"


def test_gpu_worker_reserves_a_gpu_from_a_cuda_build(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"] != "https://download.pytorch.org/whl/cpu"
    assert gpu["image"] != services["worker"]["image"]
    assert run_settings("worker-gpu", gpu, tmp_path)[1].device == "cuda"


def test_every_broker_is_the_redis_service(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    redis = services["redis"]
    assert redis["command"][0] == "redis-server"
    port = redis_server_port(redis["command"][1:])
    assert redis["healthcheck"]["test"][-3:] == ["-p", str(port), "ping"]
    for name, service in streamgen_services(services).items():
        _, settings = run_settings(name, service, tmp_path)
        address = redis_address(settings.broker, name)
        assert (address.host, address.port) == ("redis", port), name
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name


def test_stop_grace_covers_the_drain(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    for name, service in streamgen_services(services).items():
        _, settings = run_settings(name, service, tmp_path)
        # Jobs get graceful_timeout_seconds, then open connections as long again.
        grace = duration_seconds(service["stop_grace_period"])
        assert grace >= 2 * settings.graceful_timeout_seconds + 5, name


def test_proxy_forwards_to_the_api_replicas(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    proxy = services["proxy"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    text = NGINX.read_text()
    directives = nginx_directives(text)
    listens = [int(args[0]) for name, args in directives if name == "listen"]
    assert container_ports(proxy) == listens
    passes = [args[0] for name, args in directives if name == "proxy_pass"]
    assert len(passes) == 1 and passes[0].startswith("http://")
    servers = nginx_upstreams(text)[passes[0].removeprefix("http://")]
    served = {}
    for name, service in streamgen_services(services).items():
        command, settings = run_settings(name, service, tmp_path)
        if command == "serve":
            served[name] = settings
    assert sorted(servers) == sorted(f"{n}:{s.port}" for n, s in served.items())
    assert set(proxy["depends_on"]) == set(served)


def test_proxy_streams_without_buffering(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    directives = dict(
        (name, args) for name, args in nginx_directives(NGINX.read_text()) if name != "server"
    )
    assert directives["proxy_buffering"] == ["off"]
    assert directives["proxy_request_buffering"] == ["off"]
    assert directives["proxy_http_version"] == ["1.1"]
    headers = [
        args for name, args in nginx_directives(NGINX.read_text()) if name == "proxy_set_header"
    ]
    assert ["Upgrade", "$http_upgrade"] in headers
    assert ["Connection", "$connection_upgrade"] in headers
    _, settings = run_settings("api-a", services["api-a"], tmp_path)
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        seconds = duration_seconds(directives[timeout][0])
        assert seconds >= 300 and seconds > 2 * settings.sse_heartbeat_seconds, timeout
    assert nginx_size_bytes(directives["client_max_body_size"][0]) >= settings.max_body_bytes


def test_image_healthcheck_matches_the_api_port(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    instructions = parse_dockerfile((DOCKER / "Dockerfile").read_text())
    check = next(i.text for i in instructions if i.keyword == "HEALTHCHECK")
    code = exec_form(check.partition("CMD ")[2])[2]
    for name in ("api-a", "api-b"):
        _, settings = run_settings(name, services[name], tmp_path)
        assert f"127.0.0.1:{settings.port}/health" in code, name


def test_helpers() -> None:
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("3600s") == 3600
    assert duration_seconds(5) == 5
    assert nginx_size_bytes("32m") == 32 * 1024 * 1024
    assert redis_server_port(["--save", ""]) == 6379
    assert nginx_upstreams("upstream u {\n server a:1;\n server b:2 max_fails=3;\n}") == {
        "u": ["a:1", "b:2"]
    }
