"""Wiring only: read settings, create components, export outputs.

`pulumi up` runs this file with infra/ as the working directory and only
infra/ on sys.path, so the checkout root is added first: the modules are
imported as the `infra` package, exactly as the renderer and tests import them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra import cluster, mesh, naming, settings
from infra.autoscaling import Autoscaler, AutoscalerArgs
from infra.local import LocalEnvironment, LocalEnvironmentArgs
from infra.mesh_install import IstioInstall, IstioInstallArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.namespace import BackendNamespace, BackendNamespaceArgs, runtime_config_hash
from infra.workload import BackendWorkload, WorkloadArgs, stable_replicas

cfg = settings.load()

if cfg.platform == "docker":
    local = LocalEnvironment("local", LocalEnvironmentArgs(images=cfg.images, local=cfg.local, policy=cfg.traffic))
    pulumi.export("endpoints", local.endpoints)
else:
    k8s_provider = cluster.provider(cfg.cluster)
    # Istio comes first: pods created before its injector exists get no sidecar.
    install = (IstioInstall("istio", IstioInstallArgs(mesh=cfg.mesh), cluster.on(k8s_provider))
               if cfg.mesh.enabled and cfg.mesh.install else None)
    after_mesh = cluster.on(k8s_provider, pulumi.ResourceOptions(depends_on=[install] if install else []))
    ns = BackendNamespace("backend", BackendNamespaceArgs(cluster=cfg.cluster, runtime=cfg.runtime, mesh=cfg.mesh),
                          after_mesh)
    services = {}
    for workload in cfg.workloads:
        cls = workload.traffic_class
        args = WorkloadArgs(
            namespace=ns.name,
            service_type=cfg.cluster.service_type,
            workload=workload,
            images=cfg.images,
            rollout=cfg.rollout,
            placement=cfg.placement,
            stable_replicas=stable_replicas(cfg.scaling.enabled, cfg.scaling.replicas),
            runtime_config_name=ns.runtime_config.metadata.name,
            runtime_config_hash=runtime_config_hash(cfg.runtime),
            pod_annotations=mesh.pod_annotations(workload, cfg.rollout) if cfg.mesh.enabled else {},
        )
        backend = BackendWorkload(cls, args, after_mesh)
        if cfg.scaling.enabled:
            Autoscaler(
                cls,
                AutoscalerArgs(namespace=ns.name, workload=workload, scaling=cfg.scaling),
                cluster.on(k8s_provider, pulumi.ResourceOptions(depends_on=[backend.deployments["stable"]])),
            )
        services[cls] = naming.service_host(cls, cfg.cluster.namespace)
    if cfg.mesh.enabled:
        mesh.ServiceMesh("mesh", mesh.MeshArgs(namespace=ns.name, namespace_name=cfg.cluster.namespace, mesh=cfg.mesh,
                                               monitoring_namespace=cfg.monitoring.namespace, tracks=cfg.images.tracks(),
                                               stack=pulumi.get_stack(), policy=cfg.traffic),
                         after_mesh)
        pulumi.export("hosts", list(cfg.mesh.hosts))
    if cfg.monitoring.enabled:
        Monitoring("monitoring", MonitoringArgs(namespace=ns.name, namespace_name=cfg.cluster.namespace,
                                                monitoring=cfg.monitoring, mesh=cfg.mesh.enabled),
                   after_mesh)
    pulumi.export("namespace", ns.name)
    pulumi.export("services", services)
