"""Wiring only: read settings, create components, export outputs.

`pulumi up` runs this file with infra/ as the working directory and only
infra/ on sys.path, so the checkout root is added first: the modules are
imported as the `infra` package, exactly as the renderer and tests import them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402

from infra import naming, settings  # noqa: E402
from infra.autoscaling import Autoscaler, AutoscalerArgs  # noqa: E402
from infra.local import LocalEnvironment, LocalEnvironmentArgs  # noqa: E402
from infra.namespace import BackendNamespace, BackendNamespaceArgs, runtime_config_hash  # noqa: E402
from infra.workload import BackendWorkload, WorkloadArgs, stable_replicas  # noqa: E402

cfg = settings.load()

if cfg.platform == "docker":
    local = LocalEnvironment("local", LocalEnvironmentArgs(images=cfg.images, local=cfg.local))
    pulumi.export("endpoints", local.endpoints)
else:
    ns = BackendNamespace("backend", BackendNamespaceArgs(cluster=cfg.cluster, runtime=cfg.runtime))
    services = {}
    for workload in cfg.workloads:
        cls = workload.traffic_class
        backend = BackendWorkload(
            cls,
            WorkloadArgs(
                namespace=ns.name,
                service_type=cfg.cluster.service_type,
                workload=workload,
                images=cfg.images,
                rollout=cfg.rollout,
                placement=cfg.placement,
                stable_replicas=stable_replicas(cfg.scaling.enabled, cfg.scaling.replicas),
                runtime_config_name=ns.runtime_config.metadata.name,
                runtime_config_hash=runtime_config_hash(cfg.runtime),
            ),
        )
        if cfg.scaling.enabled:
            Autoscaler(
                cls,
                AutoscalerArgs(namespace=ns.name, workload=workload, scaling=cfg.scaling),
                pulumi.ResourceOptions(depends_on=[backend.deployments["stable"]]),
            )
        services[cls] = naming.service_host(cls, cfg.cluster.namespace)
    pulumi.export("namespace", ns.name)
    pulumi.export("services", services)
