"""Guardrail rules for any stack of this project, enforceable in CI.

Each rule is a plain function `(args, report_violation)`; the Policy objects
in POLICIES wrap them.  The pack stands alone (it may judge stacks written by
other programs), so it does not import infra/: the image check here is a
second, independent implementation of the one in infra/settings.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE = "kubernetes:core/v1:Service"
DOCKER_CONTAINER = "docker:index/container:Container"
# Stacks whose Kubernetes resources must go to a named cluster, unless the
# pack's config says otherwise (protectedStacks).
PROTECTED_STACKS = ["prod"]
# Types whose pods are at spec.template.spec.
WORKLOADS = {DEPLOYMENT, "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet"}


def _containers(args: ResourceValidationArgs) -> Iterator[Mapping[str, Any]]:
    if args.resource_type not in WORKLOADS:
        return
    pod = args.props.get("spec", {}).get("template", {}).get("spec", {})
    yield from pod.get("initContainers", []) or []
    yield from pod.get("containers", []) or []


def image_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    name, _, digest = ref.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if digest:
        return "uses :latest" if tag == "latest" else None
    if not tag:
        return "has no tag (means :latest)"
    return "uses :latest" if tag == "latest" else None


def deployment_has_probes(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != DEPLOYMENT:
        return
    for c in _containers(args):
        for probe in ("livenessProbe", "readinessProbe"):
            if not c.get(probe):
                report_violation(f"container {c.get('name')!r} has no {probe}", None)


def deployment_has_resources(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != DEPLOYMENT:
        return
    for c in _containers(args):
        resources = c.get("resources") or {}
        for section in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if not (resources.get(section) or {}).get(r)]
            if missing:
                report_violation(f"container {c.get('name')!r} has no {section} for {', '.join(missing)}", None)


def no_latest_images(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    images = [(c.get("name"), c.get("image", "")) for c in _containers(args)]
    if args.resource_type == DOCKER_CONTAINER:
        images.append((args.props.get("name"), args.props.get("image", "")))
    for name, ref in images:
        problem = image_problem(ref)
        if problem:
            report_violation(f"container {name!r} image {ref!r} {problem}; pin a version", None)


def no_privileged_containers(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for c in _containers(args):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            report_violation(f"container {c.get('name')!r} is privileged", None)
        if sc.get("allowPrivilegeEscalation", True):
            # Kubernetes allows escalation unless it is explicitly turned off.
            report_violation(f"container {c.get('name')!r} does not set allowPrivilegeEscalation: false", None)
    if args.resource_type == DOCKER_CONTAINER and args.props.get("privileged"):
        report_violation(f"container {args.props.get('name')!r} is privileged", None)


def hpa_bounds(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != HPA:
        return
    spec = args.props.get("spec", {})
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if high is None or low > high:
        report_violation(f"minReplicas {low} is greater than maxReplicas {high}", None)


def no_load_balancer(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != SERVICE or args.props.get("spec", {}).get("type") != "LoadBalancer":
        return
    if not args.get_config().get("allowLoadBalancer", False):
        report_violation(
            f"Service {args.props.get('metadata', {}).get('name')!r} is a LoadBalancer (a public address); "
            "traffic enters through the edge tier or the mesh gateway. Set allowLoadBalancer in the policy config to permit it.",
            None,
        )


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def deployments_have_pdb(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Every Deployment's pods are covered by a PDB in the same namespace."""
    pdbs = [r.props for r in args.resources if r.resource_type == PDB]
    for r in args.resources:
        if r.resource_type != DEPLOYMENT:
            continue
        namespace = r.props.get("metadata", {}).get("namespace")
        labels = r.props.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        if not any(p.get("metadata", {}).get("namespace") == namespace
                   and _matches(p.get("spec", {}).get("selector", {}), labels) for p in pdbs):
            report_violation(f"Deployment {r.props.get('metadata', {}).get('name')!r} has no PodDisruptionBudget", r.urn)


def _stack_of(urn: str) -> str:
    """The stack in a URN: urn:pulumi:STACK::PROJECT::TYPE::NAME."""
    head = urn.split("::", 1)[0]
    return head.split(":", 2)[2] if head.startswith("urn:pulumi:") else ""


def kubernetes_names_its_cluster(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """On a protected stack every Kubernetes resource goes through a provider
    that names its cluster (a kubeconfig context or file).  A provider that
    names none uses the current context of whoever runs `pulumi up`, so a
    context switched in another terminal points production's program at
    another cluster."""
    protected = set(args.get_config().get("protectedStacks", PROTECTED_STACKS))
    unnamed: dict[tuple[str, str], list[PolicyResource]] = {}
    for r in args.resources:
        stack = _stack_of(r.urn)
        if not r.resource_type.startswith("kubernetes:") or stack not in protected:
            continue
        provider = r.provider
        if provider is None or not (provider.props.get("context") or provider.props.get("kubeconfig")):
            unnamed.setdefault((stack, provider.name if provider else "the default provider"), []).append(r)
    for (stack, provider_name), resources in unnamed.items():
        report_violation(f"{len(resources)} Kubernetes resource(s) of protected stack {stack!r} (the first: "
                         f"{resources[0].name!r}) go through {provider_name!r}, which names no cluster; give the "
                         "provider a context or a kubeconfig", resources[0].urn)


# --- the Istio mesh ------------------------------------------------------------

def _istio_kind(resource_type: str) -> str | None:
    """Kind of an Istio custom resource, any served version (v1, v1beta1, ...)."""
    _, _, rest = resource_type.partition(":")
    api_version, _, kind = rest.partition(":")
    return kind if api_version.split("/")[0].endswith(".istio.io") else None


def _name(props: Mapping[str, Any]) -> str | None:
    return props.get("metadata", {}).get("name")


def no_permissive_mtls(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """PERMISSIVE accepts plain text next to mTLS (for migrations); DISABLE is plain text."""
    if _istio_kind(args.resource_type) != "PeerAuthentication":
        return
    spec = args.props.get("spec", {})
    modes = [("namespace", (spec.get("mtls") or {}).get("mode"))]
    modes += [(f"port {port}", (m or {}).get("mode")) for port, m in (spec.get("portLevelMtls") or {}).items()]
    for where, mode in modes:
        if mode == "DISABLE" or (mode == "PERMISSIVE" and not args.get_config().get("allowPermissiveMtls", False)):
            report_violation(f"PeerAuthentication {_name(args.props)!r} sets {where} mTLS to {mode}; use STRICT "
                             "(set allowPermissiveMtls in the policy config during a migration)", None)


def destination_rule_has_outlier_detection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Outlier detection is the mesh's circuit breaker: without it a failing pod keeps its share."""
    if _istio_kind(args.resource_type) != "DestinationRule":
        return
    outlier = (args.props.get("spec", {}).get("trafficPolicy") or {}).get("outlierDetection") or {}
    if not (outlier.get("consecutive5xxErrors") or outlier.get("consecutiveGatewayErrors")):
        report_violation(f"DestinationRule {_name(args.props)!r} has no outlier detection "
                         "(trafficPolicy.outlierDetection.consecutive5xxErrors)", None)


def route_weights_sum_to_100(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if _istio_kind(args.resource_type) != "VirtualService":
        return
    for index, route in enumerate(args.props.get("spec", {}).get("http", []) or []):
        destinations = route.get("route") or []
        if len(destinations) < 2 and all("weight" not in d for d in destinations):
            continue  # a lone destination without weight gets everything
        total = sum(d.get("weight", 0) for d in destinations)
        if total != 100:
            report_violation(f"VirtualService {_name(args.props)!r} route {route.get('name', index)!r} "
                             f"weights sum to {total}, not 100", None)


def virtual_service_subsets_exist(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A route to a subset no DestinationRule defines answers 503 (no healthy upstream)."""
    defined = set()
    for r in args.resources:
        if _istio_kind(r.resource_type) == "DestinationRule":
            spec = r.props.get("spec", {})
            defined |= {(spec.get("host"), s.get("name")) for s in spec.get("subsets", []) or []}
    for r in args.resources:
        if _istio_kind(r.resource_type) != "VirtualService":
            continue
        for route in r.props.get("spec", {}).get("http", []) or []:
            for d in route.get("route") or []:
                target = d.get("destination", {})
                if target.get("subset") and (target.get("host"), target["subset"]) not in defined:
                    report_violation(f"VirtualService {_name(r.props)!r} routes to subset {target['subset']!r} of "
                                     f"{target.get('host')!r}, which no DestinationRule defines", r.urn)


def _resource_policy(name: str, description: str, validate, **kwargs) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY, **kwargs)


POLICIES = [
    _resource_policy("deployment-has-probes", "Every Deployment container has liveness and readiness probes.",
                     deployment_has_probes),
    _resource_policy("deployment-has-resources", "Every Deployment container has CPU and memory requests and limits.",
                     deployment_has_resources),
    _resource_policy("no-latest-images", "Images are pinned: a tag other than latest, or a digest.", no_latest_images),
    _resource_policy("no-privileged-containers", "No privileged containers and no privilege escalation.",
                     no_privileged_containers),
    _resource_policy("hpa-min-le-max", "HorizontalPodAutoscaler minReplicas is at most maxReplicas.", hpa_bounds),
    _resource_policy(
        "no-load-balancer-services", "No Service of type LoadBalancer unless allowLoadBalancer is set.",
        no_load_balancer,
        config_schema=PolicyConfigSchema(properties={"allowLoadBalancer": {"type": "boolean", "default": False}}),
    ),
    _resource_policy(
        "no-permissive-mtls", "PeerAuthentication is STRICT: no DISABLE, no PERMISSIVE unless allowPermissiveMtls is set.",
        no_permissive_mtls,
        config_schema=PolicyConfigSchema(properties={"allowPermissiveMtls": {"type": "boolean", "default": False}}),
    ),
    _resource_policy("destination-rule-has-outlier-detection", "Every DestinationRule ejects failing pods (circuit breaker).",
                     destination_rule_has_outlier_detection),
    _resource_policy("route-weights-sum-to-100", "Weighted VirtualService routes split exactly 100 percent.",
                     route_weights_sum_to_100),
    StackValidationPolicy(name="deployment-has-pdb", description="Every Deployment is covered by a PodDisruptionBudget.",
                          validate=deployments_have_pdb, enforcement_level=EnforcementLevel.MANDATORY),
    StackValidationPolicy(
        name="kubernetes-names-its-cluster",
        description="On a protected stack, every Kubernetes resource's provider names a context or kubeconfig.",
        validate=kubernetes_names_its_cluster, enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties={"protectedStacks": {
            "type": "array", "items": {"type": "string"}, "default": PROTECTED_STACKS}}),
    ),
    StackValidationPolicy(name="virtual-service-subsets-exist",
                          description="Every subset a VirtualService routes to is defined by a DestinationRule.",
                          validate=virtual_service_subsets_exist, enforcement_level=EnforcementLevel.MANDATORY),
]
