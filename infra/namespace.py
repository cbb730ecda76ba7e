"""The backend's namespace and its runtime ConfigMap (the backend's tuning knobs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.settings import ClusterSettings, MeshSettings, RuntimeSettings


def namespace_labels(mesh: MeshSettings) -> dict[str, str]:
    """Labels of the namespace: sidecar injection and Pod Security admission.

    Pods here meet the `restricted` Pod Security standard, so it is enforced
    unless the mesh injects istio-init, which needs NET_ADMIN.  With Istio CNI
    the node agent sets up the redirection instead and the injected containers
    are restricted-compliant, so enforcement stays on; only a mesh without CNI
    downgrades it to warn and audit.
    """
    pod_security = {"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}
    if not mesh.enabled or mesh.cni:
        pod_security["pod-security.kubernetes.io/enforce"] = "restricted"
    return {
        naming.SIDECAR_INJECTION_LABEL: "enabled" if mesh.enabled else "disabled",
        "app.kubernetes.io/part-of": naming.PART_OF,
        "app.kubernetes.io/managed-by": naming.MANAGED_BY,
        **pod_security,
    }


def runtime_config_data(runtime: RuntimeSettings) -> dict[str, str]:
    """Environment the backend reads at start (envFrom this ConfigMap)."""
    return {
        "AUTOMATA_MAX_CONNECTIONS": str(runtime.max_connections),
        "AUTOMATA_POOL_SIZE": str(runtime.pool_size),
        "AUTOMATA_POOL_TIMEOUT": str(runtime.pool_timeout),
        "AUTOMATA_CB_FAILURE_THRESHOLD": str(runtime.failure_threshold),
        "AUTOMATA_CB_RECOVERY_TIMEOUT": str(runtime.recovery_timeout),
    }


def runtime_config_hash(runtime: RuntimeSettings) -> str:
    """Put on pod templates: env from a ConfigMap is read only at start, so a
    change must roll the pods, and a changed template is what triggers that."""
    blob = json.dumps(runtime_config_data(runtime), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class BackendNamespaceArgs:
    cluster: ClusterSettings
    runtime: RuntimeSettings
    mesh: MeshSettings


class BackendNamespace(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackendNamespaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:k8s:BackendNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.cluster.namespace, labels=namespace_labels(args.mesh)
            ),
            opts=child,
        )
        # Children depend on the namespace object, not just its name, so
        # Pulumi creates it first and deletes it last.
        self.name: pulumi.Output[str] = self.namespace.metadata.name
        self.runtime_config = k8s.core.v1.ConfigMap(
            f"{name}-runtime",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=naming.RUNTIME_CONFIG_NAME,
                namespace=self.name,
                labels={"app": naming.APP, "app.kubernetes.io/part-of": naming.PART_OF},
            ),
            data=runtime_config_data(args.runtime),
            opts=child,
        )
        self.register_outputs({"namespace": self.name})
