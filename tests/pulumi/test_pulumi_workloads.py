"""What each stack puts on the cluster: one property per test, real values."""

from __future__ import annotations

import pytest
from manifest_helpers import K8S_STACKS, container, objects

from infra import naming

# (stack, class): (minReplicas, maxReplicas) -- from stacks/Pulumi.<stack>.yaml
# or, where a stack is silent, Pulumi.yaml's defaults.
HPA_BOUNDS = {
    ("staging", "api"): (2, 5), ("staging", "websocket"): (2, 5), ("staging", "ai"): (2, 3),
    ("prod", "api"): (3, 15), ("prod", "websocket"): (3, 12), ("prod", "ai"): (2, 8),
}


@pytest.mark.parametrize(("stack", "cls"), sorted(HPA_BOUNDS))
def test_hpa_bounds_come_from_the_stack_file(records, stack, cls):
    hpa = objects(records(stack), "HorizontalPodAutoscaler")[naming.workload_name(cls)]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == HPA_BOUNDS[(stack, cls)]


@pytest.mark.parametrize("cls", naming.TRAFFIC_CLASSES)
def test_hpa_targets_cpu_70_and_memory_80_of_the_stable_deployment(records, cls):
    spec = objects(records("prod"), "HorizontalPodAutoscaler")[naming.workload_name(cls)]["spec"]
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in spec["metrics"]}
    assert targets == {"cpu": {"type": "Utilization", "averageUtilization": 70},
                       "memory": {"type": "Utilization", "averageUtilization": 80}}
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": naming.deployment_name(cls, "stable")}


def test_hpa_scales_up_at_once_and_down_slowly(records):
    behavior = objects(records("prod"), "HorizontalPodAutoscaler")["automata-api"]["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["selectPolicy"] == "Max"
    assert {(p["type"], p["value"]) for p in behavior["scaleUp"]["policies"]} == {("Percent", 100), ("Pods", 4)}
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Percent", "value": 10, "periodSeconds": 60}]


def test_autoscaled_stable_deployments_leave_replicas_to_the_hpa(records):
    deployments = objects(records("prod"), "Deployment")
    assert all("replicas" not in deployments[naming.deployment_name(c, "stable")]["spec"] for c in naming.TRAFFIC_CLASSES)


def test_disabling_autoscaling_removes_hpas_and_pins_replicas(records):
    dev = records("dev")  # dev sets autoscaling: false, replicas: 1
    assert objects(dev, "HorizontalPodAutoscaler") == {}
    assert {name: d["spec"]["replicas"] for name, d in objects(dev, "Deployment").items()} == {
        "automata-api": 1, "automata-websocket": 1, "automata-ai": 1}


@pytest.mark.parametrize("stack", K8S_STACKS)
def test_every_workload_has_a_pdb_selecting_its_pods(records, stack):
    pdbs = objects(records(stack), "PodDisruptionBudget")
    for cls in naming.TRAFFIC_CLASSES:
        pdb = pdbs[naming.workload_name(cls)]
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == {"app": "automata-backend", "component": cls}


@pytest.mark.parametrize("probe, path", [("livenessProbe", "/healthz"), ("readinessProbe", "/health"),
                                         ("startupProbe", "/healthz")])
def test_probes_hit_the_backend_health_paths_on_the_named_port(records, probe, path):
    for deployment in objects(records("prod"), "Deployment").values():
        assert container(deployment)[probe]["httpGet"] == {"path": path, "port": "http"}


def test_ai_probes_allow_longer_answers_than_api(records):
    deployments = objects(records("prod"), "Deployment")
    assert container(deployments["automata-ai"])["readinessProbe"]["timeoutSeconds"] == 5
    assert container(deployments["automata-api"])["readinessProbe"]["timeoutSeconds"] == 2


def test_ai_gets_its_own_resources(records):
    resources = {n: container(d)["resources"] for n, d in objects(records("prod"), "Deployment").items()}
    assert resources["automata-ai"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                        "limits": {"cpu": "2", "memory": "2Gi"}}
    assert resources["automata-api"]["limits"] == {"cpu": "1", "memory": "512Mi"}


def test_canary_track_has_its_own_labels_image_and_replicas(records):
    canary = objects(records("prod"), "Deployment")["automata-api-canary"]
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "automata-backend", "component": "api", "version": "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"]["version"] == "canary"
    assert container(canary)["image"] == "ghcr.io/automata/backend:1.1.0"
    assert canary["spec"]["replicas"] == 1
    stable = objects(records("prod"), "Deployment")["automata-api"]
    assert container(stable)["image"] == "ghcr.io/automata/backend:1.0.0"
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "stable"


def test_service_spans_both_tracks_so_the_mesh_can_split_by_version(records):
    service = objects(records("prod"), "Service")["automata-api"]
    assert service["spec"]["selector"] == {"app": "automata-backend", "component": "api"}
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                                         "appProtocol": "http"}]


def test_dev_without_canary_image_has_no_canary_deployment(records):
    assert not [n for n in objects(records("dev"), "Deployment") if n.endswith("-canary")]


def test_rolling_update_keeps_capacity(records):
    strategy = objects(records("prod"), "Deployment")["automata-websocket"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    dev = objects(records("dev"), "Deployment")["automata-api"]["spec"]["strategy"]["rollingUpdate"]
    assert dev == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize(("cls", "grace", "drain"), [("api", 75, 70), ("websocket", 120, 115), ("ai", 320, 315)])
def test_graceful_shutdown_covers_prestop_and_drain(records, cls, grace, drain):
    deployment = objects(records("prod"), "Deployment")[naming.workload_name(cls)]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert pod["terminationGracePeriodSeconds"] == grace
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    # The backend drains for what is left after the preStop, never longer.
    assert c["args"][c["args"].index("--grace-period") + 1] == str(drain)


def test_pods_run_non_root_read_only_without_escalation(records):
    for deployment in objects(records("prod"), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        sc = container(deployment)["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["privileged"]) == (True, False, False)
        assert sc["capabilities"] == {"drop": ["ALL"]}


def test_pods_spread_over_zones_and_strictly_over_nodes_in_prod(records):
    pod = objects(records("prod"), "Deployment")["automata-api"]["spec"]["template"]["spec"]
    rules = {t["topologyKey"]: t["whenUnsatisfiable"] for t in pod["topologySpreadConstraints"]}
    assert rules == {"topology.kubernetes.io/zone": "ScheduleAnyway", "kubernetes.io/hostname": "DoNotSchedule"}
    dev = objects(records("dev"), "Deployment")["automata-api"]["spec"]["template"]["spec"]
    assert {t["whenUnsatisfiable"] for t in dev["topologySpreadConstraints"]} == {"ScheduleAnyway"}


def test_each_workload_runs_as_its_own_service_account(records):
    prod = records("prod")
    accounts = objects(prod, "ServiceAccount")
    for deployment in objects(prod, "Deployment").values():
        sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert sa in accounts and accounts[sa]["automountServiceAccountToken"] is False


def test_namespace_without_mesh_disables_injection_and_enforces_restricted(records):
    # The mesh side (injection, restricted kept with CNI) is in test_pulumi_mesh.py.
    dev_ns = objects(records("dev"), "Namespace")["automata"]["metadata"]["labels"]
    assert dev_ns["istio-injection"] == "disabled" and dev_ns["pod-security.kubernetes.io/enforce"] == "restricted"


def test_runtime_configmap_carries_the_spec_tuning_and_reaches_the_pods(records):
    prod = records("prod")
    data = objects(prod, "ConfigMap")["automata-runtime"]["data"]
    assert data == {"AUTOMATA_MAX_CONNECTIONS": "100", "AUTOMATA_POOL_SIZE": "20", "AUTOMATA_POOL_TIMEOUT": "30",
                    "AUTOMATA_CB_FAILURE_THRESHOLD": "5", "AUTOMATA_CB_RECOVERY_TIMEOUT": "300"}
    c = container(objects(prod, "Deployment")["automata-ai"])
    assert c["envFrom"] == [{"configMapRef": {"name": "automata-runtime"}}]


def test_a_tuning_change_rolls_the_pods(records):
    from infra import offline

    def config_hash(recs):
        return objects(recs, "Deployment")["automata-api"]["spec"]["template"]["metadata"]["annotations"][
            "automata.io/runtime-config-hash"]

    assert config_hash(offline.run("prod", {"poolSize": 30})) != config_hash(records("prod"))
