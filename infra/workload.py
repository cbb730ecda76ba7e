"""One traffic class of the backend: Deployments (stable, canary), Service,
ServiceAccount and PodDisruptionBudget.

The pod spec is built by pure functions so the mesh and the tests
can reuse it; `WorkloadArgs.pod_annotations` is where the mesh adds its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.naming import Track
from infra.settings import ImageSettings, PlacementSettings, RolloutSettings, WorkloadSettings

# Non-root identity baked into the reference backend image.
RUN_AS_USER = 10001

# Probe timings.  Startup gives a cold pod 2s x 30 = 60s before liveness
# takes over, so a slow start is not killed as a hang.
STARTUP_PERIOD, STARTUP_FAILURES = 2, 30
LIVENESS_PERIOD, LIVENESS_FAILURES = 10, 3
READINESS_PERIOD, READINESS_FAILURES = 5, 2
# /health checks the backend's dependencies; AI pods answer it more slowly
# under load, so they get a longer probe timeout than the others.
PROBE_TIMEOUT = {"api": 2, "websocket": 2, "ai": 5}

# Old ReplicaSets kept for `kubectl rollout undo` (automata-lb rollback).
REVISION_HISTORY = 5


@dataclass(frozen=True)
class WorkloadArgs:
    namespace: pulumi.Input[str]
    service_type: str
    workload: WorkloadSettings
    images: ImageSettings
    rollout: RolloutSettings
    placement: PlacementSettings
    # None while an HPA owns the stable replica count (see stable_replicas).
    stable_replicas: int | None
    runtime_config_name: pulumi.Input[str]
    runtime_config_hash: str
    pod_annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def traffic_class(self) -> str:
        return self.workload.traffic_class

    def tracks(self) -> tuple[Track, ...]:
        return self.images.tracks()

    def image(self, track: Track) -> str:
        return self.images.canary if track == "canary" and self.images.canary else self.images.stable

    def replicas(self, track: Track) -> int | None:
        return self.images.canary_replicas if track == "canary" else self.stable_replicas


def stable_replicas(autoscaling: bool, pinned: int) -> int | None:
    """With an HPA the Deployment must not state replicas: every `pulumi up`
    would otherwise reset the count the HPA chose."""
    return None if autoscaling else pinned


def container(args: WorkloadArgs, track: Track) -> k8s.core.v1.ContainerArgs:
    w = args.workload
    http = naming.PORT_NAME
    timeout = PROBE_TIMEOUT[w.traffic_class]
    env = [
        # Expanded by the kubelet in args below: each pod names itself.
        k8s.core.v1.EnvVarArgs(
            name="POD_NAME",
            value_from=k8s.core.v1.EnvVarSourceArgs(field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")),
        ),
        k8s.core.v1.EnvVarArgs(name="AUTOMATA_TRAFFIC_CLASS", value=w.traffic_class),
    ]
    if w.request_timeout is not None:
        env.append(k8s.core.v1.EnvVarArgs(name="AUTOMATA_REQUEST_TIMEOUT", value=str(w.request_timeout)))
    return k8s.core.v1.ContainerArgs(
        name="backend",
        image=args.image(track),
        image_pull_policy="IfNotPresent",  # tags are pinned (settings.pinned_image)
        args=naming.backend_args("$(POD_NAME)", track, args.rollout.drain_seconds(w)),
        ports=[k8s.core.v1.ContainerPortArgs(name=http, container_port=naming.CONTAINER_PORT, protocol="TCP")],
        env=env,
        env_from=[k8s.core.v1.EnvFromSourceArgs(config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=args.runtime_config_name))],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": w.cpu_request, "memory": w.memory_request},
            limits={"cpu": w.cpu_limit, "memory": w.memory_limit},
        ),
        startup_probe=_probe(naming.LIVENESS_PATH, STARTUP_PERIOD, STARTUP_FAILURES, timeout),
        liveness_probe=_probe(naming.LIVENESS_PATH, LIVENESS_PERIOD, LIVENESS_FAILURES, timeout),
        readiness_probe=_probe(naming.READINESS_PATH, READINESS_PERIOD, READINESS_FAILURES, timeout),
        # The pod stays in the endpoints for a moment after deletion starts;
        # sleeping before SIGTERM lets kube-proxy, ingress and sidecars stop
        # sending it new requests.  The sleep action needs no shell in the image.
        lifecycle=k8s.core.v1.LifecycleArgs(
            pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                sleep=k8s.core.v1.SleepActionArgs(seconds=args.rollout.pre_stop_seconds)
            )
        ),
        security_context=k8s.core.v1.SecurityContextArgs(
            privileged=False,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        ),
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
    )


def _probe(path: str, period: int, failures: int, timeout: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=naming.PORT_NAME),
        period_seconds=period,
        failure_threshold=failures,
        timeout_seconds=timeout,
    )


def topology_spread(args: WorkloadArgs, track: Track) -> list[k8s.core.v1.TopologySpreadConstraintArgs]:
    """Spread each track over zones (best effort) and nodes (strict in prod).

    matchLabelKeys pod-template-hash spreads each ReplicaSet on its own, so a
    rollout's new pods are spread too instead of piling where old ones left.
    """
    selector = k8s.meta.v1.LabelSelectorArgs(match_labels=naming.track_selector_labels(args.traffic_class, track))
    node_rule = "DoNotSchedule" if args.placement.strict_node_spread else "ScheduleAnyway"
    return [
        k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1, topology_key=key, when_unsatisfiable=rule, label_selector=selector,
            match_label_keys=["pod-template-hash"],
        )
        for key, rule in (("topology.kubernetes.io/zone", "ScheduleAnyway"), ("kubernetes.io/hostname", node_rule))
    ]


def pod_template(args: WorkloadArgs, track: Track) -> k8s.core.v1.PodTemplateSpecArgs:
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(
            labels=naming.labels(args.traffic_class, track),
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(naming.CONTAINER_PORT),
                "prometheus.io/path": naming.METRICS_PATH,
                "automata.io/runtime-config-hash": args.runtime_config_hash,
                **args.pod_annotations,
            },
        ),
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=naming.workload_name(args.traffic_class),
            automount_service_account_token=False,  # the backend never calls the API server
            termination_grace_period_seconds=args.workload.grace_period,
            security_context=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True,
                run_as_user=RUN_AS_USER,
                run_as_group=RUN_AS_USER,
                fs_group=RUN_AS_USER,
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            containers=[container(args, track)],
            # The root filesystem is read-only; Python and uvicorn still want a /tmp.
            volumes=[k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="64Mi"))],
            topology_spread_constraints=topology_spread(args, track),
        ),
    )


def deployment_spec(args: WorkloadArgs, track: Track) -> k8s.apps.v1.DeploymentSpecArgs:
    return k8s.apps.v1.DeploymentSpecArgs(
        replicas=args.replicas(track),
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=naming.track_selector_labels(args.traffic_class, track)),
        strategy=k8s.apps.v1.DeploymentStrategyArgs(
            type="RollingUpdate",
            rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                max_surge=args.rollout.max_surge, max_unavailable=args.rollout.max_unavailable
            ),
        ),
        min_ready_seconds=args.rollout.min_ready_seconds,
        revision_history_limit=REVISION_HISTORY,
        template=pod_template(args, track),
    )


class BackendWorkload(pulumi.ComponentResource):
    """Deployments per track, one Service over both tracks (the mesh splits
    traffic by the `version` label), a ServiceAccount and a PDB."""

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:k8s:BackendWorkload", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cls = args.traffic_class
        base = naming.workload_name(cls)

        def metadata(object_name: str, track: Track | None = None) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.namespace, labels=naming.labels(cls, track))

        # Pulumi names carry the component name: URNs of children of the same
        # component type would otherwise collide between classes.
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=metadata(base), automount_service_account_token=False, opts=child
        )
        self.deployments = {
            track: k8s.apps.v1.Deployment(
                f"{name}-{track}",
                metadata=metadata(naming.deployment_name(cls, track), track),
                spec=deployment_spec(args, track),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.service_account]),
            )
            for track in args.tracks()
        }
        self.service = k8s.core.v1.Service(
            f"{name}-svc",
            metadata=metadata(naming.service_name(cls)),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=args.service_type,
                selector=naming.selector_labels(cls),
                ports=[k8s.core.v1.ServicePortArgs(
                    name=naming.PORT_NAME, port=naming.SERVICE_PORT, target_port=naming.PORT_NAME,
                    protocol="TCP", app_protocol="http",
                )],
                **session_affinity(cls),
            ),
            opts=child,
        )
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=metadata(base),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=args.rollout.disruption_budget,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=naming.selector_labels(cls)),
            ),
            opts=child,
        )
        self.register_outputs({"service": self.service.metadata.name})


def session_affinity(traffic_class: str) -> dict:
    """A WebSocket client stays on one backend.  Without the mesh the
    Service does it by client IP; with the mesh, its DestinationRule does."""
    if traffic_class != "websocket":
        return {}
    return {
        "session_affinity": "ClientIP",
        "session_affinity_config": k8s.core.v1.SessionAffinityConfigArgs(
            client_ip=k8s.core.v1.ClientIPConfigArgs(timeout_seconds=3 * 3600)
        ),
    }
