"""deploy/kubernetes: each overlay renders with `kubectl kustomize`, every object passes
`kubernetes-validate --strict` (offline: it carries the schemas), and the pods are the ones the
README promises — probes, security, GPU or not, settings exactly the service's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import COMPUTED_SETTINGS, INTERNAL_SETTINGS, Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("gpu", "cpu", "models")
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
GPU = "nvidia.com/gpu"


def _render(tree: Path, overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make test` installs it (Debian's kubernetes-client)"
    r = subprocess.run(
        [kubectl, "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _validate(rendered: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "rendered.yaml"
    path.write_text(rendered)
    return subprocess.run([str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    objects = {o["kind"]: o for o in yaml.safe_load_all(_render(DEPLOY, request.param))}
    return request.param, objects


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_rendered_object_passes_strict_validation(name: str, tmp_path: Path) -> None:
    r = _validate(_render(DEPLOY, name), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    assert all(f"{k.lower()}/" in r.stdout for k in kinds), r.stdout


def test_a_misspelled_field_fails_the_validation(tmp_path: Path) -> None:
    """The check bites: the same tree with one field misspelled is refused, naming it."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, tree)
    deployment = tree / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("readinessProbe:", "readinesProbe:", 1))
    r = _validate(_render(tree, "cpu"), tmp_path)
    assert r.returncode != 0 and "readinesProbe" in r.stdout + r.stderr, r.stdout


def test_probes_check_the_services_own_health_paths_on_its_port(overlay: tuple[str, dict[str, Any]]) -> None:
    _, objects = overlay
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = objects["ConfigMap"]["data"]
    assert ports["http"] == int(config["JACOBIAN_PORT"]) and config["JACOBIAN_HOST"] == "0.0.0.0"
    want = {"startupProbe": "/health/ready", "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
    for probe, path in want.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == ports["http"], probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180  # TensorFlow's load and warm-up
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] in ("http", ports["http"])


def test_pods_run_locked_down_with_writable_tmp_and_memory_backed_shm(overlay: tuple[str, dict[str, Any]]) -> None:
    _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == {"/tmp", "/dev/shm"}  # the only writable ones (a model repository is read-only)
    assert "emptyDir" in volumes[mounts["/tmp"]]
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    largest_answer = Settings().max_output_elements * 8
    assert shm["medium"] == "Memory" and _bytes(shm["sizeLimit"]) >= largest_answer


def test_sigterm_drains_before_the_pod_is_killed(overlay: tuple[str, dict[str, Any]]) -> None:
    _, objects = overlay
    grace = objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(objects["ConfigMap"]["data"]["JACOBIAN_DEADLINE_S"])


def test_gpu_pods_take_one_gpu_and_cpu_pods_none(overlay: tuple[str, dict[str, Any]]) -> None:
    name, objects = overlay
    container, pod = _container(objects), objects["Deployment"]["spec"]["template"]["spec"]
    limits = container["resources"]["limits"]
    assert container["image"] == f"jacobian-service:{'gpu' if name == 'gpu' else 'cpu'}"  # models: on cpu
    if name == "gpu":
        assert limits[GPU] == 1
        assert any(t["key"] == GPU for t in pod["tolerations"]) and pod["nodeSelector"]
    else:
        assert GPU not in limits and "tolerations" not in pod and "nodeSelector" not in pod


def test_the_memory_budget_follows_the_limit(overlay: tuple[str, dict[str, Any]]) -> None:
    _, objects = overlay
    container = _container(objects)
    assert _bytes(container["resources"]["limits"]["memory"]) >= 4 << 30
    # Empty: the service takes half of its cgroup's limit, which is this container's limit.
    assert objects["ConfigMap"]["data"]["JACOBIAN_MEMORY_BUDGET_BYTES"] == ""


def test_the_configmap_holds_exactly_the_services_settings(
    overlay: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No drift: a setting added to app/config.py and missing here fails this test."""
    _, objects = overlay
    data = objects["ConfigMap"]["data"]
    public = {n for n in Settings.model_fields if n not in INTERNAL_SETTINGS and n != "api_key"}
    assert set(data) == {f"JACOBIAN_{n.upper()}" for n in public}
    for name in COMPUTED_SETTINGS:
        assert data[f"JACOBIAN_{name.upper()}"] == "", name  # the service computes them in the pod
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    Settings()  # every value is one the service accepts
    (api_key,) = [e for e in _container(objects)["env"] if e["name"] == "JACOBIAN_API_KEY"]
    assert api_key["valueFrom"]["secretKeyRef"]["optional"] is True


def test_metrics_are_scraped_and_the_autoscaler_targets_the_deployment(overlay: tuple[str, dict[str, Any]]) -> None:
    _, objects = overlay
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def test_the_models_overlay_mounts_the_repository_read_only() -> None:
    objects = {o["kind"]: o for o in yaml.safe_load_all(_render(DEPLOY, "models"))}
    container = _container(objects)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == "/models" and mount["readOnly"] is True
    volumes = objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
    claim = next(v for v in volumes if v["name"] == "models")["persistentVolumeClaim"]
    assert claim == {"claimName": "jacobian-models", "readOnly": True}
    assert objects["ConfigMap"]["data"]["JACOBIAN_MODEL_REPOSITORY"] == "/models"
