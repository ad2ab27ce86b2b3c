"""deploy/kubernetes/: schema validation with kubernetes-validate, plus the cross-references between
manifests that a schema cannot see (kustomization ↔ files, probes ↔ ports ↔ config, volumes ↔ claims).

kubernetes-validate only knows built-in kinds: the ServiceMonitor (a Prometheus Operator CRD) and the
Kustomization (a kustomize file, not an API object) are checked structurally here instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests import kubernetes_schemas

REPO = Path(__file__).resolve().parents[1]
K8S_DIR = REPO / "deploy" / "kubernetes"
CONFIG_FILE = PurePosixPath("/etc/athena-supervisor/config.yaml")
STATE_DIR = PurePosixPath("/var/lib/athena-supervisor")
# The oldest Kubernetes minor we promise to support, and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_schemas.latest_version())
NOT_BUILT_IN = {"ServiceMonitor", "Kustomization"}

Manifest = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def load(path: Path) -> Manifest:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert len(documents) == 1, f"{path.name}: one resource per file"
    document = documents[0]
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    """Every resource, by kind (each kind appears once)."""
    by_kind: dict[str, Manifest] = {}
    for path in manifest_files():
        document = load(path)
        assert document["kind"] not in by_kind, f"two {document['kind']} manifests"
        by_kind[document["kind"]] = document
    return by_kind


@pytest.fixture(scope="module")
def kustomization() -> Manifest:
    return load(K8S_DIR / "kustomization.yaml")


@pytest.fixture(scope="module")
def pod(manifests: dict[str, Manifest]) -> Manifest:
    spec: Manifest = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Manifest) -> Manifest:
    containers = pod["containers"]
    assert len(containers) == 1
    only: Manifest = containers[0]
    return only


@pytest.fixture(scope="module")
def daemon_config(manifests: dict[str, Manifest]) -> Manifest:
    data = yaml.safe_load(manifests["ConfigMap"]["data"][CONFIG_FILE.name])
    assert isinstance(data, dict)
    return data


def pod_labels(manifests: dict[str, Manifest]) -> dict[str, str]:
    labels: dict[str, str] = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def container_port(container: Manifest, name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert name in ports, f"no container port named {name!r}"
    return int(ports[name])


# --- files and schemas -----------------------------------------------------------------------------


def test_kustomization_lists_exactly_the_manifests_in_the_directory(kustomization: Manifest) -> None:
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == {path.name for path in manifest_files()}


def test_every_expected_kind_is_present(manifests: dict[str, Manifest]) -> None:
    assert set(manifests) >= {
        "Deployment", "ConfigMap", "PersistentVolumeClaim", "Service", "ServiceAccount",
        "ServiceMonitor", "PodDisruptionBudget",
    }


def built_in_manifest_files() -> list[Path]:
    return [path for path in manifest_files() if load(path)["kind"] not in NOT_BUILT_IN]


def test_only_the_service_monitor_escapes_schema_validation() -> None:
    skipped = {path.name for path in manifest_files()} - {path.name for path in built_in_manifest_files()}
    assert skipped == {"servicemonitor.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", built_in_manifest_files(), ids=lambda path: path.name)
def test_built_in_resources_pass_strict_schema_validation(path: Path, version: str) -> None:
    document = load(path)
    try:
        kubernetes_schemas.validate(document, version)
    except kubernetes_schemas.ValidationError as exc:
        where = "/".join(str(part) for part in exc.path)
        pytest.fail(f"{path.name} against Kubernetes {version}: {where}: {exc.message}")


def test_the_validator_rejects_unknown_fields() -> None:
    """Guard against a validator that passes everything (e.g. a kind it silently does not know)."""
    bad = load(K8S_DIR / "service.yaml")
    bad["spec"]["publishNotReadyAdresses"] = True
    with pytest.raises(kubernetes_schemas.ValidationError):
        kubernetes_schemas.validate(bad, K8S_VERSIONS[0])


def test_kustomization_structure(kustomization: Manifest, manifests: dict[str, Manifest],
                                 container: Manifest) -> None:
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images", "labels"}
    assert kustomization["namespace"] == manifests["Namespace"]["metadata"]["name"]
    for document in manifests.values():
        assert "namespace" not in document["metadata"], "the kustomization sets the namespace"
    (image,) = kustomization["images"]
    name, _, tag = container["image"].partition(":")
    assert image["name"] == name
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert tag == image["newTag"] == version, "image tags follow the project version"


def test_service_monitor_structure(manifests: dict[str, Manifest]) -> None:
    monitor, service = manifests["ServiceMonitor"], manifests["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert endpoint["port"] in service_ports
        assert endpoint.get("path", "/metrics") == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint[key]), f"{key}: a Prometheus duration"


# --- the deployment --------------------------------------------------------------------------------


def test_single_replica_recreated_never_rolled(manifests: dict[str, Manifest]) -> None:
    spec = manifests["Deployment"]["spec"]
    assert spec["replicas"] == 1, "the SQLite journal is single-writer"
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update would run two writers at once"
    assert selects(spec["selector"]["matchLabels"], pod_labels(manifests))


def test_probes_hit_health_endpoints_on_the_metrics_port(container: Manifest,
                                                         daemon_config: Manifest) -> None:
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/healthz"
    assert readiness["httpGet"]["path"] == "/readyz"
    for probe in (liveness, readiness):
        port = probe["httpGet"]["port"]
        number = container_port(container, port) if isinstance(port, str) else port
        assert number == daemon_config["http"]["port"]


def test_container_runs_the_daemon_on_the_mounted_config(container: Manifest, pod: Manifest,
                                                         manifests: dict[str, Manifest]) -> None:
    assert "command" not in container, "keep the image's ENTRYPOINT"
    assert container["args"] == ["run", "--config", str(CONFIG_FILE)]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert set(mounts) == set(volumes)
    config_mount = mounts["config"]
    assert config_mount["mountPath"] == str(CONFIG_FILE.parent) and config_mount["readOnly"] is True
    config_volume = volumes["config"]["configMap"]
    assert config_volume["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert {item["path"] for item in config_volume["items"]} == {CONFIG_FILE.name}
    assert mounts["journal"]["mountPath"] == str(STATE_DIR)
    claim = volumes["journal"]["persistentVolumeClaim"]["claimName"]
    assert claim == manifests["PersistentVolumeClaim"]["metadata"]["name"]
    # A read-only root filesystem still needs a writable /tmp.
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]


def test_resources_are_bounded(container: Manifest) -> None:
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_security_context_meets_the_restricted_pod_security_standard(pod: Manifest, container: Manifest,
                                                                      manifests: dict[str, Manifest]) -> None:
    pod_context, context = pod["securityContext"], container["securityContext"]
    assert pod_context["runAsNonRoot"] is True and context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] > 0 and pod_context["runAsGroup"] > 0
    assert pod_context["fsGroup"] == pod_context["runAsGroup"], "the journal volume must be writable"
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert manifests["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    user = re.findall(r"^USER\s+(\d+):(\d+)\s*$", dockerfile, flags=re.MULTILINE)
    assert user[-1] == (str(pod_context["runAsUser"]), str(pod_context["runAsGroup"])), \
        "runAsUser/runAsGroup should be the image's USER"


def test_termination_grace_leaves_time_to_drain(pod: Manifest) -> None:
    assert pod["terminationGracePeriodSeconds"] >= 30


# --- service, account, disruption budget, claim ----------------------------------------------------


def test_service_exposes_the_metrics_port(manifests: dict[str, Manifest], container: Manifest) -> None:
    service = manifests["Service"]
    assert selects(service["spec"]["selector"], pod_labels(manifests))
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9464
    assert container_port(container, port["targetPort"]) == 9464


def test_service_account_carries_the_irsa_role(manifests: dict[str, Manifest], pod: Manifest) -> None:
    account = manifests["ServiceAccount"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role == "arn:aws:iam::ACCOUNT_ID:role/athena-supervisor"


def test_disruption_budget_selects_the_pod_without_blocking_drains(manifests: dict[str, Manifest]) -> None:
    spec = manifests["PodDisruptionBudget"]["spec"]
    assert selects(spec["selector"]["matchLabels"], pod_labels(manifests))
    # With one replica, minAvailable: 1 would block every node drain forever.
    assert "minAvailable" not in spec and spec["maxUnavailable"] == 1


def test_journal_claim_is_single_node(manifests: dict[str, Manifest]) -> None:
    claim = manifests["PersistentVolumeClaim"]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"]


# --- the daemon's config ---------------------------------------------------------------------------


def test_config_listens_on_all_interfaces_and_journals_on_the_claim(daemon_config: Manifest) -> None:
    assert daemon_config["http"] == {"host": "0.0.0.0", "port": 9464}
    journal = PurePosixPath(daemon_config["journal"]["path"])
    assert journal.is_absolute() and STATE_DIR in journal.parents
    assert daemon_config["mode"] == "dry-run", "ship dry-run; switching to enforce is a deliberate step"


def test_config_is_valid_for_the_daemon(manifests: dict[str, Manifest], tmp_path: Path) -> None:
    if importlib.util.find_spec("supervisor.config") is None:
        pytest.skip("supervisor.config (load_settings) is not on this branch yet; the merge enables this")
    config = importlib.import_module("supervisor.config")
    path = tmp_path / CONFIG_FILE.name
    path.write_text(manifests["ConfigMap"]["data"][CONFIG_FILE.name], encoding="utf-8")
    settings = config.load_settings(path, environ={})
    assert settings.http.host == "0.0.0.0" and settings.http.port == 9464
    assert PurePosixPath(settings.journal.path).parent == STATE_DIR
    assert settings.policies, "a realistic config has policies"
