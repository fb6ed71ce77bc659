"""docker/k8s/ manifests agree with the CLI, the settings, the image and each other: labels
and selectors, ports, probes on /health, the Redis address, grace periods, GPUs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamgen.config import Settings, load_settings

from .manifests import (
    DOCKER,
    K8S,
    SETTING_NAMES,
    DeployFileError,
    effective_settings,
    env_instructions,
    load_yaml_documents,
    parse_dockerfile,
    redis_address,
    redis_server_port,
)

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the kustomization's resources, by (kind, name)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization()["resources"]:
        for doc in load_yaml_documents(K8S / resource):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            assert "namespace" not in doc["metadata"], f"{key}: keep manifests namespace-free"
            out[key] = doc
    return out


def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml_documents(K8S / "kustomization.yaml")
    assert doc["kind"] == "Kustomization"
    return doc


def of_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, dict]:
    return {name: obj for (k, name), obj in objects.items() if k == kind}


@dataclass(frozen=True)
class Container:
    """A container of a Deployment, with what it mounts (container path to text)."""

    deployment: str
    pod: dict[str, Any]
    spec: dict[str, Any]
    files: dict[str, str]

    @property
    def where(self) -> str:
        return f"Deployment {self.deployment}, container {self.spec['name']}"

    def env(self) -> dict[str, str]:
        """The image's ENV, then the container's `env` (plain values only)."""
        env = env_instructions(parse_dockerfile((DOCKER / "Dockerfile").read_text()))
        for var in self.spec.get("env", []):
            assert isinstance(var.get("value"), str), f"{self.where}: {var['name']} not a string"
            env[var["name"]] = var["value"]
        return env

    def port(self, ref: int | str) -> int:
        """A port number or the name of one of this container's ports."""
        if isinstance(ref, int):
            return ref
        for port in self.spec.get("ports", []):
            if port.get("name") == ref:
                return int(port["containerPort"])
        raise DeployFileError(f"{self.where}: no port named {ref!r}")


def containers(objects: dict[tuple[str, str], dict[str, Any]]) -> list[Container]:
    configmaps = of_kind(objects, "ConfigMap")
    out = []
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for spec in pod["containers"]:
            files: dict[str, str] = {}
            for mount in spec.get("volumeMounts", []):
                source = volumes[mount["name"]].get("configMap")
                if source is None:
                    continue
                data = configmaps[source["name"]]["data"]
                if "subPath" in mount:
                    files[mount["mountPath"]] = data[mount["subPath"]]
                else:
                    for key, text in data.items():
                        files[f"{mount['mountPath'].rstrip('/')}/{key}"] = text
            out.append(Container(name, pod, spec, files))
    return out


def streamgen_containers(objects: dict[tuple[str, str], dict[str, Any]]) -> list[Container]:
    return [c for c in containers(objects) if c.spec["image"].split(":")[0] == "streamgen"]


def run_settings(container: Container, scratch: Path) -> tuple[str, Settings]:
    """The subcommand and settings of a streamgen container (ENTRYPOINT is `streamgen`)."""
    spec = container.spec
    assert spec.get("command") in (None, ["streamgen"]), f"{container.where}: keep ENTRYPOINT"
    args, settings = effective_settings(
        spec["args"], container.env(), container.files, scratch, container.where
    )
    return args.command, settings


def by_command(objects: dict, scratch: Path, command: str) -> list[tuple[Container, Settings]]:
    found = []
    for container in streamgen_containers(objects):
        ran, settings = run_settings(container, scratch)
        if ran == command:
            found.append((container, settings))
    assert found, f"no container runs `streamgen {command}`"
    return found


def graceful_timeout(objects: dict, scratch: Path) -> float:
    """The graceful timeout every streamgen container runs with (they must agree)."""
    values = {
        run_settings(c, scratch)[1].graceful_timeout_seconds for c in streamgen_containers(objects)
    }
    assert len(values) == 1, f"containers disagree on graceful_timeout_seconds: {values}"
    return values.pop()


def test_kustomization_lists_every_manifest(objects: dict) -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {kind for kind, _ in objects}
    assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


def test_selectors_match_pod_labels(objects: dict) -> None:
    deployments = of_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    for name, service in of_kind(objects, "Service").items():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"


def test_configmap_settings_are_real_and_load(objects: dict, tmp_path: Path) -> None:
    for name, configmap in of_kind(objects, "ConfigMap").items():
        for key, text in configmap["data"].items():
            assert key.endswith((".yaml", ".yml")), f"ConfigMap {name}: {key}"
            values = yaml.safe_load(text)
            assert isinstance(values, dict)
            unknown = set(values) - SETTING_NAMES
            assert not unknown, f"ConfigMap {name}/{key}: not settings: {sorted(unknown)}"
            path = tmp_path / key
            path.write_text(text)
            load_settings(path, environ={})


def test_containers_parse_and_use_the_mounted_config(objects: dict, tmp_path: Path) -> None:
    for container in streamgen_containers(objects):
        for var in container.spec.get("env", []):
            name = var["name"]
            if name.startswith("STREAMGEN_") and name != "STREAMGEN_CONFIG":
                assert name.removeprefix("STREAMGEN_").lower() in SETTING_NAMES, name
        # Parses with the real CLI; the --config file must be one the pod mounts.
        env = container.env()
        args, settings = effective_settings(
            container.spec["args"], env, container.files, tmp_path, container.where
        )
        assert args.command in {"serve", "worker"}
        assert args.config is not None, f"{container.where}: reads no settings file"
        # What the file says holds unless a variable or a flag overrides it.
        values = yaml.safe_load((tmp_path / "settings.yaml").read_text())
        for key, value in values.items():
            if f"STREAMGEN_{key.upper()}" in env or getattr(args, key, None) is not None:
                continue
            assert getattr(settings, key) == value, (container.where, key)


def test_api_ports_agree(objects: dict, tmp_path: Path) -> None:
    services = of_kind(objects, "Service")
    for container, settings in by_command(objects, tmp_path, "serve"):
        assert settings.host == "0.0.0.0"
        assert not settings.embedded_worker, f"{container.where}: the workers run the jobs"
        assert container.port("http") == settings.port
        labels = objects[("Deployment", container.deployment)]["spec"]["template"]["metadata"]
        fronting = [
            s
            for s in services.values()
            if s["spec"]["selector"].items() <= labels["labels"].items()
        ]
        assert fronting, f"no Service in front of {container.deployment}"
        for service in fronting:
            for port in service["spec"]["ports"]:
                assert container.port(port["targetPort"]) == settings.port


def test_api_probes_ask_health_on_the_served_port(objects: dict, tmp_path: Path) -> None:
    for container, settings in by_command(objects, tmp_path, "serve"):
        for probe in PROBES:
            check = container.spec[probe]["httpGet"]
            assert check["path"] == "/health", (container.where, probe)
            assert container.port(check["port"]) == settings.port, (container.where, probe)


def test_liveness_outlasts_the_grace_period(objects: dict, tmp_path: Path) -> None:
    # /health answers 503 while draining; a liveness probe must not kill a draining pod.
    for container, _ in by_command(objects, tmp_path, "serve"):
        live = container.spec["livenessProbe"]
        window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
        assert window > container.pod["terminationGracePeriodSeconds"], container.where


def test_grace_periods_cover_the_drain(objects: dict, tmp_path: Path) -> None:
    graceful = graceful_timeout(objects, tmp_path)
    for container in streamgen_containers(objects):
        # serve: jobs get graceful_timeout_seconds, then open connections as long again.
        grace = container.pod["terminationGracePeriodSeconds"]
        assert grace >= 2 * graceful + 5, container.where


def test_every_broker_is_the_redis_service(objects: dict, tmp_path: Path) -> None:
    service = objects[("Service", "redis")]
    (port,) = service["spec"]["ports"]
    (redis,) = [c for c in containers(objects) if c.spec["image"].startswith("redis:")]
    assert (
        service["spec"]["selector"].items()
        <= (
            objects[("Deployment", redis.deployment)]["spec"]["template"]["metadata"]["labels"]
        ).items()
    )
    listening = redis_server_port(redis.spec["args"])
    assert redis.port(port["targetPort"]) == listening
    for container in streamgen_containers(objects):
        _, settings = run_settings(container, tmp_path)
        address = redis_address(settings.broker, container.where)
        assert (address.host, address.port) == ("redis", port["port"]), container.where


def test_hpa_scales_the_api(objects: dict, tmp_path: Path) -> None:
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    api = {c.deployment for c, _ in by_command(objects, tmp_path, "serve")}
    assert {target["name"]} == api
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization is measured against the request: each API container must make one.
    metric = hpa["spec"]["metrics"][0]["resource"]
    for container, _ in by_command(objects, tmp_path, "serve"):
        assert metric["name"] in container.spec["resources"]["requests"], container.where


def test_workers_get_a_gpu(objects: dict, tmp_path: Path) -> None:
    for container, settings in by_command(objects, tmp_path, "worker"):
        assert int(container.spec["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert settings.device.startswith("cuda"), container.where
        assert container.spec["image"] == "streamgen:cuda"


def test_pods_run_as_the_image_user(objects: dict) -> None:
    users = [
        i.text for i in parse_dockerfile((DOCKER / "Dockerfile").read_text()) if i.keyword == "USER"
    ]
    for container in streamgen_containers(objects):
        context = container.pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert str(context["runAsUser"]) == users[-1], container.where
