"""HorizontalPodAutoscaler (autoscaling/v2) for a traffic class's stable track.

The canary track is not autoscaled: it keeps a fixed, small share of pods
while the mesh decides its share of traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.settings import ScalingSettings, WorkloadSettings


@dataclass(frozen=True)
class AutoscalerArgs:
    namespace: pulumi.Input[str]
    workload: WorkloadSettings
    scaling: ScalingSettings


def metrics(scaling: ScalingSettings) -> list[k8s.autoscaling.v2.MetricSpecArgs]:
    """CPU and memory utilisation targets (70% / 80% by default), relative to requests."""
    return [
        k8s.autoscaling.v2.MetricSpecArgs(
            type="Resource",
            resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                name=resource,
                target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=target),
            ),
        )
        for resource, target in (("cpu", scaling.cpu_target), ("memory", scaling.memory_target))
    ]


def behavior(scaling: ScalingSettings) -> k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs:
    """Scale up fast (the larger of a percentage or a pod count per period),
    scale down slowly behind a stabilisation window so a dip does not drop
    pods that the next burst needs, and WebSocket clients are not reshuffled."""
    period = scaling.policy_period
    return k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
        scale_up=k8s.autoscaling.v2.HPAScalingRulesArgs(
            stabilization_window_seconds=scaling.scale_up_window,
            select_policy="Max",
            policies=[
                k8s.autoscaling.v2.HPAScalingPolicyArgs(type="Percent", value=scaling.scale_up_percent, period_seconds=period),
                k8s.autoscaling.v2.HPAScalingPolicyArgs(type="Pods", value=scaling.scale_up_pods, period_seconds=period),
            ],
        ),
        scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
            stabilization_window_seconds=scaling.scale_down_window,
            select_policy="Min",
            policies=[
                k8s.autoscaling.v2.HPAScalingPolicyArgs(type="Percent", value=scaling.scale_down_percent, period_seconds=period),
            ],
        ),
    )


class Autoscaler(pulumi.ComponentResource):
    def __init__(self, name: str, args: AutoscalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:k8s:Autoscaler", name, None, opts)
        cls = args.workload.traffic_class
        self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=naming.workload_name(cls), namespace=args.namespace, labels=naming.labels(cls, "stable")
            ),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=naming.deployment_name(cls, "stable")
                ),
                min_replicas=args.workload.min_replicas,
                max_replicas=args.workload.max_replicas,
                metrics=metrics(args.scaling),
                behavior=behavior(args.scaling),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"hpa": self.hpa.metadata.name})
