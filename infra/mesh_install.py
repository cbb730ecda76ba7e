"""Istio itself, as Helm releases: base (CRDs), cni, istiod, ingress gateway.

Skipped when `meshInstall` is false: the mesh objects (infra/mesh.py) then
rely on an Istio already in the cluster, which must offer the tracing
provider below (docs/mesh.md shows the meshConfig snippet).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.settings import MeshSettings

# One pin for the charts and the CRD schemas the tests validate against
# (cloudcoil-models-istio 1.24.2.x in pyproject.toml): bump them together.
ISTIO_VERSION = "1.24.2"
CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
SYSTEM_NAMESPACE = "istio-system"
# Name of the extension provider in meshConfig that the Telemetry objects use.
TRACING_PROVIDER = "automata-otel"


def istiod_values(mesh: MeshSettings) -> dict:
    return {
        # With CNI, istiod injects no istio-init (NET_ADMIN) container.
        "pilot": {"cni": {"enabled": mesh.cni}},
        "meshConfig": {
            "enableTracing": True,
            "extensionProviders": [{
                "name": TRACING_PROVIDER,
                "opentelemetry": {"service": mesh.tracing.collector_host, "port": mesh.tracing.collector_port},
            }],
        },
    }


def gateway_values(mesh: MeshSettings) -> dict:
    return {
        # The gateway is the cluster's public entry, hence a LoadBalancer; it
        # lives in a Helm release, outside the backend namespace's guardrail.
        "service": {"type": "LoadBalancer"},
        "autoscaling": {"enabled": True, "minReplicas": mesh.gateway_min_replicas,
                        "maxReplicas": mesh.gateway_max_replicas},
    }


@dataclass(frozen=True)
class IstioInstallArgs:
    mesh: MeshSettings


class IstioInstall(pulumi.ComponentResource):
    """Releases in dependency order: CRDs before the control plane, the CNI
    agent before istiod injects pods that rely on it, istiod before the gateway
    (its pods are injected too)."""

    def __init__(self, name: str, args: IstioInstallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:mesh:IstioInstall", name, None, opts)
        mesh = args.mesh
        previous: list[pulumi.Resource] = []

        def release(chart: str, release_name: str, namespace: str, values: dict) -> k8s.helm.v3.Release:
            created = k8s.helm.v3.Release(
                f"{name}-{chart}",
                # An explicit name: Pulumi would add a random suffix, and the
                # gateway's labels and service account derive from it.
                name=release_name,
                chart=chart,
                version=ISTIO_VERSION,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
                namespace=namespace,
                create_namespace=True,
                values=values,
                # A failed upgrade rolls back instead of leaving a half-updated mesh.
                atomic=True,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(previous)),
            )
            previous.append(created)
            return created

        self.base = release("base", "istio-base", SYSTEM_NAMESPACE, {"defaultRevision": "default"})
        self.cni = release("cni", "istio-cni", SYSTEM_NAMESPACE, {}) if mesh.cni else None
        self.istiod = release("istiod", "istiod", SYSTEM_NAMESPACE, istiod_values(mesh))
        self.gateway = release("gateway", naming.GATEWAY_RELEASE, mesh.gateway_namespace, gateway_values(mesh))
        self.register_outputs({"version": ISTIO_VERSION})
