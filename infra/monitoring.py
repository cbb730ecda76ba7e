"""Monitoring of the cluster side: kube-prometheus-stack, what it scrapes,
the alert rules and the load-balancer dashboard.

The alert rules and the dashboard are the same objects the lab's Prometheus
loads (monitoring/rules.py, monitoring/dashboard.py): one source, rendered
for the lab as files and here as a PrometheusRule and a ConfigMap that
Grafana's dashboard sidecar picks up.  With `monitoringInstall: false` only
those objects and the monitors are created, for a Prometheus Operator that
already runs in the cluster (label them with `monitoringSelectorLabels`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.settings import MonitoringSettings
from monitoring import dashboard, rules

# One pin for the chart and the CRD schemas the tests validate against:
# chart 69.x ships Prometheus Operator 0.80, whose CRDs are the models of
# cloudcoil-models-prometheus-operator 0.80.x in pyproject.toml.
CHART = "kube-prometheus-stack"
CHART_VERSION = "69.8.2"
CHART_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
RELEASE_NAME = "kube-prometheus-stack"
OPERATOR = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = "grafana_dashboard"
DASHBOARD_CONFIGMAP = "automata-load-balancer-dashboard"
# Where Istio's sidecar on the Prometheus pod writes the workload certificate
# Prometheus presents to scrape mTLS-only pods (Istio's documented pattern).
ISTIO_CERTS = "/etc/prom-certs"
ENVOY_METRICS_PORT = "http-envoy-prom"


def helm_values(m: MonitoringSettings, mesh: bool) -> dict:
    prometheus_spec: dict = {
        "retention": m.retention,
        "scrapeInterval": m.scrape_interval,
        "storageSpec": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": m.storage_size}}}}},
        # Select our monitors and rules by namespace, not by the chart's own
        # release label, so they need no chart-specific labels.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
    }
    if mesh:
        # The backend answers only mTLS inside the mesh (STRICT), and the
        # mesh's AuthorizationPolicy admits the monitoring namespace by its
        # mTLS identity: Prometheus gets a sidecar that only writes its
        # certificate to a shared volume and intercepts no traffic.
        prometheus_spec["podMetadata"] = {
            "labels": {"sidecar.istio.io/inject": "true"},
            "annotations": {
                "traffic.sidecar.istio.io/includeInboundPorts": "",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "",
                "proxy.istio.io/config": json.dumps({"proxyMetadata": {"OUTPUT_CERTS": "/etc/istio-output-certs"}}),
                "sidecar.istio.io/userVolumeMount": json.dumps([{"name": "istio-certs",
                                                                 "mountPath": "/etc/istio-output-certs"}]),
            },
        }
        prometheus_spec["volumes"] = [{"name": "istio-certs", "emptyDir": {"medium": "Memory"}}]
        prometheus_spec["volumeMounts"] = [{"name": "istio-certs", "mountPath": ISTIO_CERTS}]
    return {
        "prometheus": {"prometheusSpec": prometheus_spec},
        "grafana": {
            "admin": {"existingSecret": m.grafana_admin_secret,
                      "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "labelValue": "1",
                                       "searchNamespace": "ALL"}},
        },
    }


def service_monitor_spec(traffic_class: str, namespace: str, scrape_interval: str, mesh: bool) -> dict:
    """Scrape the /metrics of every pod behind a class's Service, both tracks,
    with the labels the dashboard and the alerts use: job=backend,
    instance=<pod>, version=<track>."""
    endpoint: dict = {
        "port": naming.PORT_NAME,
        "path": naming.METRICS_PATH,
        "interval": scrape_interval,
        "relabelings": [
            {"targetLabel": "job", "replacement": "backend", "action": "replace"},
            {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "instance", "action": "replace"},
            {"sourceLabels": ["__meta_kubernetes_pod_label_version"], "targetLabel": "version", "action": "replace"},
        ],
    }
    if mesh:
        endpoint["scheme"] = "https"
        endpoint["tlsConfig"] = {
            "caFile": f"{ISTIO_CERTS}/root-cert.pem",
            "certFile": f"{ISTIO_CERTS}/cert-chain.pem",
            "keyFile": f"{ISTIO_CERTS}/key.pem",
            # Istio certificates name SPIFFE identities, not DNS names.
            "insecureSkipVerify": True,
        }
    return {
        "selector": {"matchLabels": naming.selector_labels(traffic_class)},
        "namespaceSelector": {"matchNames": [namespace]},
        "endpoints": [endpoint],
    }


def sidecar_pod_monitor_spec(namespace: str, scrape_interval: str) -> dict:
    """Envoy's own statistics from every sidecar of the backend namespace
    (plain HTTP on the port Istio reserves for it)."""
    return {
        "selector": {"matchExpressions": [{"key": "security.istio.io/tlsMode", "operator": "Exists"}]},
        "namespaceSelector": {"matchNames": [namespace]},
        "podMetricsEndpoints": [{
            "port": ENVOY_METRICS_PORT,
            "path": "/stats/prometheus",
            "interval": scrape_interval,
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "instance", "action": "replace"},
            ],
        }],
    }


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: pulumi.Input[str]  # the backend namespace
    namespace_name: str
    monitoring: MonitoringSettings
    mesh: bool


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:monitoring:Monitoring", name, None, opts)
        m = args.monitoring
        labels = {"app.kubernetes.io/part-of": naming.PART_OF, "app.kubernetes.io/managed-by": naming.MANAGED_BY}
        depends: list[pulumi.Resource] = []

        if m.install:
            # Ours, not the chart's (create_namespace), so the Grafana Secret
            # can exist before the release that reads it.
            self.namespace = k8s.core.v1.Namespace(
                f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=m.namespace, labels=labels),
                opts=pulumi.ResourceOptions(parent=self))
            depends.append(self.namespace)
        if m.grafana_admin_password is not None:
            self.grafana_secret = k8s.core.v1.Secret(
                f"{name}-grafana-admin",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=m.grafana_admin_secret, namespace=m.namespace,
                                                    labels=labels),
                string_data={"admin-user": "admin", "admin-password": m.grafana_admin_password},
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends)))
            depends.append(self.grafana_secret)
        if m.install:
            self.release = k8s.helm.v3.Release(
                f"{name}-stack",
                name=RELEASE_NAME,
                chart=CHART,
                version=CHART_VERSION,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
                namespace=m.namespace,
                values=helm_values(m, args.mesh),
                atomic=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends)),
            )
            # The monitors and the rule are custom resources of the CRDs the chart installs.
            depends.append(self.release)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(depends))

        def custom(resource_name: str, kind: str, object_name: str, namespace: pulumi.Input[str],
                   spec: dict) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{resource_name}", api_version=OPERATOR, kind=kind,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=namespace,
                                                    labels={**labels, **m.selector_labels}),
                spec=spec, opts=child)

        self.service_monitors = {
            cls: custom(f"{cls}-sm", "ServiceMonitor", naming.workload_name(cls), args.namespace,
                        service_monitor_spec(cls, args.namespace_name, m.scrape_interval, args.mesh))
            for cls in naming.TRAFFIC_CLASSES
        }
        if args.mesh:
            self.sidecar_monitor = custom("sidecars-pm", "PodMonitor", "automata-sidecars", args.namespace,
                                          sidecar_pod_monitor_spec(args.namespace_name, m.scrape_interval))
        self.rules = custom("rules", "PrometheusRule", "automata-load-balancing", m.namespace,
                            rules.rule_groups(m.alert_thresholds))
        self.dashboard = k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=DASHBOARD_CONFIGMAP, namespace=m.namespace,
                                                labels={**labels, DASHBOARD_LABEL: "1"}),
            data={"load-balancer-dashboard.json": dashboard.render()},
            opts=child)
        self.register_outputs({"namespace": m.namespace})
