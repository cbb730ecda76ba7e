"""The cluster's monitoring: kube-prometheus-stack pinned, monitors that find
the backend, the same alert rules and dashboard as the lab, validated against
the Prometheus Operator's CRD models."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
from pulumi.runtime import rpc
from manifest_helpers import objects, validate_operator

from infra import offline
from infra.monitoring import CHART_VERSION, DASHBOARD_CONFIGMAP, OPERATOR
from monitoring import dashboard, rules

MONITORED = ["staging", "prod"]
# How the engine marks a secret value on the wire.
SECRET_SIG = rpc._special_sig_key
SECRET_SENTINEL = rpc._special_secret_sig
MONITOR_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def _release(records) -> dict:
    (release,) = [r.inputs for r in records if r.type == offline.HELM_RELEASE
                  and r.inputs["chart"] == "kube-prometheus-stack"]
    return release


def test_the_chart_pin_matches_the_schema_models():
    # Chart 69.x ships Prometheus Operator 0.80; the models are <operator version>.<release>.
    assert CHART_VERSION.startswith("69.")
    assert version("cloudcoil-models-prometheus-operator").startswith("0.80.")


@pytest.mark.parametrize("stack", MONITORED)
def test_the_chart_is_pinned_and_configured_from_the_stack(records, stack):
    release = _release(records(stack))
    assert release["version"] == CHART_VERSION
    spec = release["values"]["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d"
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert release["values"]["grafana"]["admin"]["existingSecret"] == "grafana-admin"


def test_stack_values_reach_the_release(records):
    recs = offline.run("prod", {"monitoringRetention": "30d", "monitoringStorageSize": "200Gi"})
    spec = _release(recs)["values"]["prometheus"]["prometheusSpec"]
    assert (spec["retention"], spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]) \
        == ("30d", "200Gi")


def test_dev_has_no_monitoring(records):
    recs = records("dev")
    assert not [r for r in recs if r.type == offline.HELM_RELEASE]
    assert not [r for r in recs if offline.is_manifest(r) and r.inputs["kind"] in MONITOR_KINDS]
    assert DASHBOARD_CONFIGMAP not in objects(recs, "ConfigMap")


@pytest.mark.parametrize("stack", MONITORED)
def test_every_service_monitor_finds_a_backend_service_and_its_named_port(records, stack):
    recs = records(stack)
    services = objects(recs, "Service")
    monitors = objects(recs, "ServiceMonitor")
    assert len(monitors) == len(services) == 3
    for name, monitor in monitors.items():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services.values() if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, f"{name} selects {len(matching)} Services"
        (service,) = matching
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


@pytest.mark.parametrize("stack", MONITORED)
def test_the_monitor_objects_validate_against_the_operator_schema(records, stack):
    docs = [r.inputs for r in records(stack) if offline.is_manifest(r) and r.inputs["apiVersion"] == OPERATOR]
    assert sorted(d["kind"] for d in docs) == ["PodMonitor", "PrometheusRule",
                                               "ServiceMonitor", "ServiceMonitor", "ServiceMonitor"]
    for doc in docs:
        validate_operator(doc)


def test_operator_validation_would_catch_a_misspelt_field(records):
    monitor = next(iter(objects(records("prod"), "ServiceMonitor").values()))
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(ValueError, match="unknown to the operator schema"):
        validate_operator(broken)


def test_the_rule_is_the_lab_rule_file_for_the_same_thresholds(records):
    (rule,) = objects(records("prod"), "PrometheusRule").values()
    assert rule["spec"] == rules.rule_groups(rules.load())


def test_alert_overrides_reach_the_rule():
    recs = offline.run("prod", {"alertOverrides": {"BackendHigh5xxRatio": {"ratio": 0.02}}})
    (rule,) = objects(recs, "PrometheusRule").values()
    expr = next(r["expr"] for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "BackendHigh5xxRatio")
    assert "> 0.02)" in expr


def test_the_dashboard_configmap_carries_the_committed_dashboard_for_grafanas_sidecar(records):
    configmap = objects(records("prod"), "ConfigMap")[DASHBOARD_CONFIGMAP]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["load-balancer-dashboard.json"]) == dashboard.build()


def test_with_the_mesh_prometheus_scrapes_over_mtls_and_sidecars_are_monitored(records):
    recs = records("prod")
    for monitor in objects(recs, "ServiceMonitor").values():
        assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    assert "automata-sidecars" in objects(recs, "PodMonitor")
    pod = _release(recs)["values"]["prometheus"]["prometheusSpec"]["podMetadata"]
    assert pod["labels"]["sidecar.istio.io/inject"] == "true"


def test_without_the_mesh_prometheus_scrapes_plain_http_and_no_sidecars():
    recs = offline.run("staging", {"mesh": False})
    for monitor in objects(recs, "ServiceMonitor").values():
        assert "scheme" not in monitor["spec"]["endpoints"][0]
    assert not objects(recs, "PodMonitor")
    assert "podMetadata" not in _release(recs)["values"]["prometheus"]["prometheusSpec"]


def test_a_grafana_password_from_pulumi_becomes_the_admin_secret():
    recs = offline.run("prod", {"grafanaAdminPassword": "s3cret-from-pulumi"})
    secret = objects(recs, "Secret")["grafana-admin"]
    assert secret["metadata"]["namespace"] == "monitoring"
    # Pulumi's secret envelope: the value is encrypted in the stack's state.
    envelope = secret["stringData"]
    assert envelope[SECRET_SIG] == SECRET_SENTINEL
    assert envelope["value"]["admin-password"] == "s3cret-from-pulumi"


def test_without_a_password_grafana_reads_an_existing_secret(records):
    assert "grafana-admin" not in objects(records("prod"), "Secret")


def test_an_existing_operator_gets_labelled_objects_and_no_release():
    recs = offline.run("prod", {"monitoringInstall": False, "monitoringSelectorLabels": {"release": "prom"}})
    assert not [r for r in recs if r.type == offline.HELM_RELEASE and r.inputs["chart"] == "kube-prometheus-stack"]
    assert "monitoring" not in objects(recs, "Namespace")
    for kind in MONITOR_KINDS:
        for doc in objects(recs, kind).values():
            assert doc["metadata"]["labels"]["release"] == "prom"
