"""The policy pack's rules run over the program's own mocked resources: the
real stacks pass, and each broken variant is rejected."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from manifest_helpers import K8S_STACKS
from pulumi_policy import PolicyProviderResource, PolicyResource, ResourceValidationArgs, StackValidationArgs

from infra import offline
from policy import guardrails

RESOURCE_RULES = [guardrails.deployment_has_probes, guardrails.deployment_has_resources, guardrails.no_latest_images,
                  guardrails.no_privileged_containers, guardrails.hpa_bounds, guardrails.no_load_balancer,
                  guardrails.no_permissive_mtls, guardrails.destination_rule_has_outlier_detection,
                  guardrails.route_weights_sum_to_100]
STACK_RULES = [guardrails.deployments_have_pdb, guardrails.virtual_service_subsets_exist,
               guardrails.kubernetes_names_its_cluster]


def violations(rule, record: offline.Record, config: dict | None = None) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(record.type, record.inputs, record.urn, record.name, None, None, config or {})
    rule(args, lambda message, urn=None: found.append(message))
    return found


def stack_violations(records: list[offline.Record], rules=tuple(STACK_RULES), config: dict | None = None) -> list[str]:
    """The stack rules' verdicts, with each resource linked to the provider it was registered with."""
    found: list[str] = []
    providers = {r.urn: PolicyProviderResource(r.type, r.inputs, r.urn, r.name)
                 for r in records if r.type.startswith("pulumi:providers:")}
    resources = [PolicyResource(r.type, r.inputs, r.urn, r.name, None, providers.get(r.provider_urn), None, [], {})
                 for r in records if r.custom]
    for rule in rules:
        rule(StackValidationArgs(resources, config), lambda message, urn=None: found.append(message))
    return found


def edited(record: offline.Record, change) -> offline.Record:
    inputs = copy.deepcopy(record.inputs)
    change(inputs)
    return dataclasses.replace(record, inputs=inputs)


def first(records, kind, name=None):
    return next(r for r in records if r.custom and r.kind == kind and name in (None, r.name))


def pod_container(inputs):
    return inputs["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("stack", [*K8S_STACKS, "local"])
def test_every_stack_passes_every_rule(records, stack):
    recs = records(stack)
    assert [v for r in recs for rule in RESOURCE_RULES for v in violations(rule, r)] == []
    assert stack_violations(recs) == []


def test_deployment_without_readiness_probe_is_rejected(records):
    bad = edited(first(records("prod"), "Deployment"), lambda i: pod_container(i).pop("readinessProbe"))
    assert violations(guardrails.deployment_has_probes, bad) == ["container 'backend' has no readinessProbe"]


def test_deployment_without_memory_limit_is_rejected(records):
    bad = edited(first(records("prod"), "Deployment"), lambda i: pod_container(i)["resources"]["limits"].pop("memory"))
    assert violations(guardrails.deployment_has_resources, bad) == ["container 'backend' has no limits for memory"]


@pytest.mark.parametrize("image", ["ghcr.io/automata/backend:latest", "ghcr.io/automata/backend", "localhost:5000/backend"])
def test_unpinned_images_are_rejected(records, image):
    bad = edited(first(records("prod"), "Deployment"), lambda i: pod_container(i).update(image=image))
    assert len(violations(guardrails.no_latest_images, bad)) == 1


def test_digest_pinned_image_is_accepted(records):
    ok = edited(first(records("prod"), "Deployment"),
                lambda i: pod_container(i).update(image="ghcr.io/automata/backend@sha256:" + "a" * 64))
    assert violations(guardrails.no_latest_images, ok) == []


def test_privileged_container_is_rejected(records):
    bad = edited(first(records("prod"), "Deployment"), lambda i: pod_container(i)["securityContext"].update(privileged=True))
    assert violations(guardrails.no_privileged_containers, bad) == ["container 'backend' is privileged"]


def test_docker_privileged_container_is_rejected(records):
    bad = edited(first(records("local"), "Container"), lambda i: i.update(privileged=True))
    assert len(violations(guardrails.no_privileged_containers, bad)) == 1


def test_hpa_with_min_above_max_is_rejected(records):
    bad = edited(next(r for r in records("prod") if r.name == "api-hpa"), lambda i: i["spec"].update(minReplicas=20))
    assert violations(guardrails.hpa_bounds, bad) == ["minReplicas 20 is greater than maxReplicas 15"]


def test_load_balancer_service_is_rejected_unless_allowed():
    service = first(offline.run("prod", {"serviceType": "LoadBalancer"}), "Service")
    assert len(violations(guardrails.no_load_balancer, service)) == 1
    assert violations(guardrails.no_load_balancer, service, {"allowLoadBalancer": True}) == []


def test_deployment_without_pdb_is_rejected(records):
    without_api_pdb = [r for r in records("prod") if not (r.kind == "PodDisruptionBudget" and r.name == "api-pdb")]
    assert sorted(stack_violations(without_api_pdb)) == [
        "Deployment 'automata-api' has no PodDisruptionBudget",
        "Deployment 'automata-api-canary' has no PodDisruptionBudget",
    ]


def test_policy_pack_lists_every_rule_the_tests_exercise():
    names = {p.name for p in guardrails.POLICIES}
    assert len(names) == len(RESOURCE_RULES) + len(STACK_RULES)


@pytest.mark.parametrize("mode", ["PERMISSIVE", "DISABLE"])
def test_non_strict_mtls_is_rejected(mode):
    peer = first(offline.run("prod", {"mtlsMode": "PERMISSIVE"}), "PeerAuthentication")
    peer = edited(peer, lambda i: i["spec"]["mtls"].update(mode=mode))
    assert violations(guardrails.no_permissive_mtls, peer) == [
        f"PeerAuthentication 'default' sets namespace mTLS to {mode}; use STRICT "
        "(set allowPermissiveMtls in the policy config during a migration)"]


def test_permissive_mtls_passes_only_when_allowed_and_disable_never(records):
    peer = first(offline.run("prod", {"mtlsMode": "PERMISSIVE"}), "PeerAuthentication")
    assert violations(guardrails.no_permissive_mtls, peer, {"allowPermissiveMtls": True}) == []
    port_disabled = edited(first(records("prod"), "PeerAuthentication"),
                           lambda i: i["spec"].update(portLevelMtls={"8000": {"mode": "DISABLE"}}))
    assert len(violations(guardrails.no_permissive_mtls, port_disabled, {"allowPermissiveMtls": True})) == 1


def test_destination_rule_without_outlier_detection_is_rejected(records):
    # By name: registrations arrive from several threads, in no fixed order.
    bad = edited(first(records("prod"), "DestinationRule", "mesh-api-dr"),
                 lambda i: i["spec"]["trafficPolicy"].pop("outlierDetection"))
    assert violations(guardrails.destination_rule_has_outlier_detection, bad) == [
        "DestinationRule 'automata-api' has no outlier detection (trafficPolicy.outlierDetection.consecutive5xxErrors)"]


def test_route_weights_not_summing_to_100_are_rejected(records):
    bad = edited(first(records("prod"), "VirtualService"), lambda i: i["spec"]["http"][1]["route"][1].update(weight=20))
    assert violations(guardrails.route_weights_sum_to_100, bad) == [
        "VirtualService 'automata-edge' route 'compute' weights sum to 110, not 100"]


def test_route_to_an_undefined_subset_is_rejected(records):
    recs = records("prod")
    without_canary = [edited(r, lambda i: i["spec"].update(subsets=[s for s in i["spec"]["subsets"]
                                                                     if s["name"] != "canary"]))
                      if r.name == "mesh-ai-dr" else r for r in recs]
    found = stack_violations(without_canary, [guardrails.virtual_service_subsets_exist])
    # The A/B route and the weighted split of /ai both name it.
    assert found == ["VirtualService 'automata-edge' routes to subset 'canary' of "
                     "'automata-ai.automata.svc.cluster.local', which no DestinationRule defines"] * 2


def test_every_kubernetes_resource_goes_through_the_stacks_own_provider(records):
    recs = records("prod")
    (provider,) = [r for r in recs if r.type == "pulumi:providers:kubernetes"]
    assert provider.inputs["context"] == "automata-prod"
    kubernetes = [r for r in recs if r.type.startswith("kubernetes:")]
    assert kubernetes and {r.provider_urn for r in kubernetes} == {provider.urn}


def test_a_protected_stack_whose_provider_names_no_cluster_is_rejected(records):
    unnamed = [edited(r, lambda i: i.pop("context")) if r.type == "pulumi:providers:kubernetes" else r
               for r in records("prod")]
    found = stack_violations(unnamed, [guardrails.kubernetes_names_its_cluster])
    assert len(found) == 1
    assert found[0].startswith("45 Kubernetes resource(s) of protected stack 'prod' (the first: ")
    assert found[0].endswith("go through 'cluster', which names no cluster; give the provider a context or a kubeconfig")


def test_a_protected_stack_on_the_default_provider_is_rejected(records):
    on_default = [dataclasses.replace(r, provider="") for r in records("prod")]
    found = stack_violations(on_default, [guardrails.kubernetes_names_its_cluster])
    assert len(found) == 1 and "go through 'the default provider', which names no cluster" in found[0]


def test_which_stacks_are_protected_is_the_packs_config(records):
    # dev names no cluster: fine while unprotected, refused once the pack protects it.
    assert stack_violations(records("dev"), [guardrails.kubernetes_names_its_cluster]) == []
    found = stack_violations(records("dev"), [guardrails.kubernetes_names_its_cluster], {"protectedStacks": ["dev"]})
    assert len(found) == 1 and "protected stack 'dev'" in found[0]
    # staging names its cluster, so protecting it changes nothing.
    assert stack_violations(records("staging"), [guardrails.kubernetes_names_its_cluster],
                            {"protectedStacks": ["staging"]}) == []
