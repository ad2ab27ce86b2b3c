"""deploy/kubernetes-fleet/: the fleet overlay of deploy/kubernetes (3 replicas sharing shard leases and the
journal in DynamoDB), rendered and held to the same schemas as the base, plus what a fleet needs: a rolling
update that never drops below two replicas, a disruption budget, one replica per node, no volume for a
journal, the time to finish a call in flight at shutdown, and a config for the DynamoDB backend.

The overlay is rendered by ``tests/deploy_kustomize.py``; where ``kubectl`` is installed, the rendering is
compared with ``kubectl kustomize`` (kustomize refuses an overlay inside its base's directory, hence a
sibling directory rather than ``deploy/kubernetes/fleet``).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from supervisor.durations import parse_duration
from tests import kubernetes_schemas
from tests.deploy_kustomize import identity, load_documents, render

REPO = Path(__file__).resolve().parents[1]
BASE_DIR = REPO / "deploy" / "kubernetes"
FLEET_DIR = REPO / "deploy" / "kubernetes-fleet"
CFN_DIR = REPO / "deploy" / "cloudformation"
CONFIG_FILE = PurePosixPath("/etc/athena-supervisor/config.yaml")
K8S_VERSIONS = ("1.29.0", kubernetes_schemas.latest_version())
NOT_BUILT_IN = {"ServiceMonitor"}
REPLICAS = 3
ASSUMED_CLOCK_SKEW = timedelta(seconds=1)  # NTP-synchronised nodes (docs/fleet.md, "Failure modes")
# Defaults of aws.connect_timeout and aws.read_timeout (supervisor/config/models.py).
DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT = timedelta(seconds=2), timedelta(seconds=10)

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Manifest]:
    """The overlay's resources by kind (each kind appears once)."""
    by_kind: dict[str, Manifest] = {}
    for document in render(FLEET_DIR):
        assert document["kind"] not in by_kind, f"two {document['kind']} resources"
        by_kind[document["kind"]] = document
    return by_kind


@pytest.fixture(scope="module")
def base() -> dict[str, Manifest]:
    return {document["kind"]: document for document in render(BASE_DIR)}


@pytest.fixture(scope="module")
def pod(rendered: dict[str, Manifest]) -> Manifest:
    spec: Manifest = rendered["Deployment"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Manifest) -> Manifest:
    (only,) = pod["containers"]
    assert isinstance(only, dict)
    return only


@pytest.fixture(scope="module")
def fleet_config(rendered: dict[str, Manifest]) -> Manifest:
    data = yaml.safe_load(rendered["ConfigMap"]["data"][CONFIG_FILE.name])
    assert isinstance(data, dict)
    return data


def pod_labels(rendered: dict[str, Manifest]) -> dict[str, str]:
    labels: dict[str, str] = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def template_default(path: Path, parameter: str) -> str:
    """A CloudFormation template's parameter default."""
    from cfnlint.decode import decode  # imported by the test that uses it, not at collection

    template, errors = decode(str(path))
    assert not errors and template is not None
    default: str = template["Parameters"][parameter]["Default"]
    return default


# --- rendering ---------------------------------------------------------------------------------------------


def test_the_overlay_renders_what_kubectl_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the Python rendering alone is checked")
    for directory in (BASE_DIR, FLEET_DIR):
        result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        expected = {identity(doc): doc for doc in yaml.safe_load_all(result.stdout) if doc is not None}
        ours = {identity(doc): doc for doc in render(directory)}
        assert ours == expected, directory.name


def test_the_overlay_changes_only_what_a_fleet_needs(rendered: dict[str, Manifest],
                                                     base: dict[str, Manifest]) -> None:
    assert set(base) - set(rendered) == {"PersistentVolumeClaim"}, "no claim: the journal is in DynamoDB"
    assert set(rendered) <= set(base), "the overlay adds no kind of its own"
    for kind in ("Namespace", "Service", "ServiceMonitor", "PodDisruptionBudget"):
        assert rendered[kind] == base[kind], f"{kind} is the base's"
    for path in sorted(FLEET_DIR.glob("*.yaml")):
        for document in load_documents(path):
            assert "namespace" not in document.get("metadata", {}), f"{path.name}: the base sets it"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_built_in_resources_pass_strict_schema_validation(rendered: dict[str, Manifest], version: str) -> None:
    for kind, document in rendered.items():
        if kind in NOT_BUILT_IN:
            continue
        try:
            kubernetes_schemas.validate(document, version)
        except kubernetes_schemas.ValidationError as exc:
            where = "/".join(str(part) for part in exc.path)
            pytest.fail(f"{kind} against Kubernetes {version}: {where}: {exc.message}")


# --- replicas, rollout, disruptions, placement -------------------------------------------------------------


def test_three_replicas_rolled_one_at_a_time(rendered: dict[str, Manifest]) -> None:
    spec = rendered["Deployment"]["spec"]
    assert spec["replicas"] == REPLICAS
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    assert selects(spec["selector"]["matchLabels"], pod_labels(rendered))


def test_a_new_replica_settles_before_the_next_one_is_replaced(rendered: dict[str, Manifest],
                                                               fleet_config: Manifest) -> None:
    lease = parse_duration(fleet_config["cluster"]["lease_duration"])
    assert rendered["Deployment"]["spec"]["minReadySeconds"] >= lease.total_seconds()


def test_disruption_budget_keeps_two_replicas(rendered: dict[str, Manifest]) -> None:
    spec = rendered["PodDisruptionBudget"]["spec"]
    assert selects(spec["selector"]["matchLabels"], pod_labels(rendered))
    allowed = REPLICAS - spec["minAvailable"] if "minAvailable" in spec else spec["maxUnavailable"]
    assert allowed == 1, "one voluntary disruption at a time, and never none (drains must go through)"


def test_replicas_spread_one_per_node(pod: Manifest, rendered: dict[str, Manifest]) -> None:
    constraints = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    by_node = constraints["kubernetes.io/hostname"]
    assert by_node["maxSkew"] == 1 and by_node["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node["nodeTaintsPolicy"] == "Honor", "tainted nodes are not empty domains"
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in constraints.values():
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels(rendered))
        assert constraint["matchLabelKeys"] == ["pod-template-hash"], "a rollout's new pods spread on their own"


def test_termination_grace_outlasts_a_call_in_flight(pod: Manifest, fleet_config: Manifest) -> None:
    aws = fleet_config.get("aws", {})
    connect = parse_duration(aws["connect_timeout"]) if "connect_timeout" in aws else DEFAULT_CONNECT_TIMEOUT
    read = parse_duration(aws["read_timeout"]) if "read_timeout" in aws else DEFAULT_READ_TIMEOUT
    # A destructive call lasts at most two attempt timeouts (throttled retries are bounded by one), then the
    # answer is journaled and the leases are released; leave as much again for that.
    assert pod["terminationGracePeriodSeconds"] >= 2 * 2 * (connect + read).total_seconds()


def test_the_lease_leaves_an_acting_window_between_renewals(fleet_config: Manifest) -> None:
    """A holder acts until (renewal sent + lease_duration - margin), margin = clock skew + the connect timeout
    (an attempt started before the deadline is on the wire within it); renewals go every lease_duration / 3.
    The window must outlast two renewal periods, so one failed renewal does not pause the holder."""
    aws = fleet_config["aws"]
    lease = parse_duration(fleet_config["cluster"]["lease_duration"])
    skew = parse_duration(fleet_config["cluster"].get("max_clock_skew", "1s"))
    assert skew <= ASSUMED_CLOCK_SKEW
    margin = skew + parse_duration(aws["connect_timeout"])
    assert lease - margin > 2 * lease / 3


def test_resources_leave_room_for_a_replica_holding_every_shard(container: Manifest) -> None:
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "512Mi"}


# --- no journal volume; same pod security as the base --------------------------------------------------------


def test_no_volume_for_a_journal(pod: Manifest, container: Manifest) -> None:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"] for mount in container["volumeMounts"]}
    assert mounts == set(volumes) == {"config", "tmp"}
    assert not any("persistentVolumeClaim" in volume for volume in volumes.values())


def test_pod_security_is_the_base_s(pod: Manifest, container: Manifest, base: dict[str, Manifest]) -> None:
    base_pod = base["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert container["securityContext"] == base_pod["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert container["args"] == ["run", "--config", str(CONFIG_FILE)]


# --- identity: IRSA to the supervisor's role, member roles in the config -----------------------------------


def test_service_account_carries_the_supervisor_role(rendered: dict[str, Manifest]) -> None:
    role = rendered["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    name = template_default(CFN_DIR / "supervisor-role.yaml", "RoleName")
    assert role == f"arn:aws:iam::ACCOUNT_ID:role/{name}"
    assert name != template_default(CFN_DIR / "member-role.yaml", "RoleName"), \
        "the supervisor's account may be watched too: its member role needs the name"


def test_config_uses_dynamodb_leases_and_member_roles(fleet_config: Manifest) -> None:
    journal = fleet_config["journal"]
    assert journal["backend"] == "dynamodb" and journal["table"] and "path" not in journal
    assert parse_duration(fleet_config["cluster"]["lease_duration"]) > timedelta(0)
    assert fleet_config["http"] == {"host": "0.0.0.0", "port": 9464}
    assert fleet_config["mode"] == "dry-run", "ship dry-run; switching to enforce is a deliberate step"
    member_role = template_default(CFN_DIR / "member-role.yaml", "RoleName")
    assert fleet_config["accounts"]
    for account in fleet_config["accounts"]:
        assert re.fullmatch(r"\d{12}", account["account_id"]), "account ids are quoted strings"
        assert account["role_arn"] == f"arn:aws:iam::{account['account_id']}:role/{member_role}"
        assert account["regions"]


def test_config_is_valid_for_the_daemon(rendered: dict[str, Manifest], tmp_path: Path) -> None:
    config = importlib.import_module("supervisor.config")
    path = tmp_path / CONFIG_FILE.name
    path.write_text(rendered["ConfigMap"]["data"][CONFIG_FILE.name], encoding="utf-8")
    settings = config.load_settings(path, environ={})
    assert settings.http.host == "0.0.0.0" and settings.http.port == 9464
    assert settings.policies, "a realistic config has policies"
