"""The Kubernetes manifests of a render (``deploy/k8s``): every overlay builds offline with
kustomize (``kubectl kustomize``), every object validates against the Kubernetes schema, and the
pods are the service's processes, run unprivileged, probed and bounded.

How the manifests' settings agree with ``app/settings.py`` is checked on a synced render, in
``tests/test_generated_project.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from tests.conftest import Bake

# Any: parsed YAML; each test reads the fields it checks.
Manifest = dict[str, Any]


def kustomize(folder: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize`` builds from ``folder``."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "these checks need kubectl (its built-in kustomize) on PATH"
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [cast(Manifest, doc) for doc in yaml.safe_load_all(result.stdout) if doc]


def overlays(project: Path) -> list[Path]:
    found = sorted(path for path in (project / "deploy/k8s/overlays").iterdir() if path.is_dir())
    assert found, "no overlay to build"
    return found


def by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[Manifest]) -> dict[str, Manifest]:
    """The pod template of every Deployment and Job, by the object's name."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
    }


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.fixture(scope="module")
def built(bake: Bake) -> list[Manifest]:
    return kustomize(overlays(bake())[0])


def test_every_overlay_builds_and_every_object_validates(bake: Bake) -> None:
    for overlay in overlays(bake()):
        objects = kustomize(overlay)
        kinds = sorted(o["kind"] for o in objects)
        assert kinds.count("Deployment") == 3, kinds
        assert {"Job", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
        assert {"ConfigMap", "Secret"} <= set(kinds)
        for manifest in objects:
            # Strict: a misspelt or misplaced field fails, not only a missing one.
            kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), True)


def test_a_render_without_docker_has_no_manifests(bake: Bake) -> None:
    assert not (bake(use_docker=False) / "deploy").exists()


def test_every_process_runs_unprivileged_with_requests_and_limits(built: list[Manifest]) -> None:
    specs = pod_specs(built)
    assert len(specs) == 4, sorted(specs)
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, where
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}, where


def test_every_container_reads_the_settings_and_waits_for_the_migrations(
    built: list[Manifest],
) -> None:
    config = next(iter(by_kind(built, "ConfigMap")))
    secret = next(iter(by_kind(built, "Secret")))
    for name, spec in pod_specs(built).items():
        for container in containers(spec):
            refs = [
                source.get("configMapRef", source.get("secretRef"))["name"]
                for source in container["envFrom"]
            ]
            assert refs == [config, secret], f"{name}/{container['name']}"
        if not name.endswith("-migrate"):
            [init] = spec["initContainers"]
            assert "alembic current" in init["command"][-1], name
            assert "(head)" in init["command"][-1], name


def test_the_processes_run_the_commands_and_probes_the_readme_gives(
    built: list[Manifest],
) -> None:
    deployments = by_kind(built, "Deployment")
    api = next(d for n, d in deployments.items() if n.endswith("-api"))
    worker = next(d for n, d in deployments.items() if n.endswith("-worker"))
    scheduler = next(d for n, d in deployments.items() if n.endswith("-scheduler"))
    migrate = next(iter(by_kind(built, "Job").values()))

    [api_container] = api["spec"]["template"]["spec"]["containers"]
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    [worker_container] = worker["spec"]["template"]["spec"]["containers"]
    assert worker_container["command"][:3] == ["python", "-m", "app.worker"]
    probe = worker_container["readinessProbe"]["exec"]["command"]
    assert probe == ["python", "-m", "app.worker.probe"]
    [scheduler_container] = scheduler["spec"]["template"]["spec"]["containers"]
    assert scheduler_container["command"][:2] == ["taskiq", "scheduler"]
    # Two for availability: the schedule lease lets only one of them send.
    assert scheduler["spec"]["replicas"] == 2
    [migrate_container] = migrate["spec"]["template"]["spec"]["containers"]
    assert migrate_container["command"] == ["alembic", "upgrade", "head"]

    autoscaler = next(iter(by_kind(built, "HorizontalPodAutoscaler").values()))
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    service = next(iter(by_kind(built, "Service").values()))
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    for budget in by_kind(built, "PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector in (d["spec"]["selector"]["matchLabels"] for d in deployments.values())


def test_the_keda_component_scales_the_worker_on_its_consumer(bake: Bake, tmp_path: Path) -> None:
    project = bake()
    deploy = shutil.copytree(project / "deploy", tmp_path / "deploy")
    overlay = deploy / "k8s/overlays/example"
    kustomization = overlay / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    enabled = text.replace(
        "# components:\n#   - ../../components/keda", "components:\n  - ../../components/keda"
    )
    assert enabled != text, "the example overlay names the KEDA component"
    kustomization.write_text(enabled, encoding="utf-8")

    objects = kustomize(overlay)

    [scaled] = by_kind(objects, "ScaledObject").values()
    worker = next(n for n in by_kind(objects, "Deployment") if n.endswith("-worker"))
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    snake = project.name.replace("-", "_")
    # app/worker/queue.py's names for NATS_QUEUE_PREFIX's default in production.
    assert trigger["metadata"]["stream"] == f"{snake}_production_tasks"
    assert trigger["metadata"]["consumer"] == f"{snake}_production_worker"
