"""Every stack is rendered with the real renderer and every object validated,
strictly (unknown keys fail): Kubernetes objects against the pinned
Kubernetes OpenAPI schema, Istio objects against the typed models generated
from the Istio CRDs of the pinned Istio version, Prometheus Operator objects
against the models of its CRDs."""

from __future__ import annotations

import copy
from collections import Counter
from importlib.metadata import version

import kubernetes_validate
import pydantic
import pytest
import yaml
from cloudcoil.models.istio.networking import v1 as istio_networking
from cloudcoil.models.istio.security import v1 as istio_security
from cloudcoil.models.istio.telemetry import v1 as istio_telemetry
from manifest_helpers import K8S_STACKS, validate_operator

from infra import offline, render
from infra.mesh_install import ISTIO_VERSION
from infra.monitoring import OPERATOR

# The Kubernetes version the program targets (preStop `sleep` needs >= 1.30).
K8S_VERSION = "1.31.0"
ISTIO_MODELS = {"networking.istio.io/v1": istio_networking, "security.istio.io/v1": istio_security,
                "telemetry.istio.io/v1": istio_telemetry}

_WORKLOADS = {"Namespace": 1, "ConfigMap": 1, "ServiceAccount": 3, "Service": 3, "PodDisruptionBudget": 3}
_MESH = {"PeerAuthentication": 1, "RequestAuthentication": 1, "AuthorizationPolicy": 4, "DestinationRule": 3,
         "Gateway": 1, "VirtualService": 1, "Telemetry": 2}
# Monitoring: its namespace, the dashboard ConfigMap and the operator's objects.
_MONITORING = {"Namespace": 2, "ConfigMap": 2, "ServiceMonitor": 3, "PodMonitor": 1, "PrometheusRule": 1}
EXPECTED_KINDS = {
    "dev": {**_WORKLOADS, "Deployment": 3},
    "staging": {**_WORKLOADS, "Deployment": 6, "HorizontalPodAutoscaler": 3, **_MESH, **_MONITORING},
}
EXPECTED_KINDS["prod"] = EXPECTED_KINDS["staging"]
# What the renderer writes beside the manifests: Istio's and kube-prometheus-stack's
# Helm releases, and the Kubernetes provider (the cluster everything goes to).
EXPECTED_RELEASES = {"dev": 0, "staging": 5, "prod": 5}
PROVIDER = "pulumi:providers:kubernetes"


def validate_istio(doc: dict) -> None:
    """Parse with the CRD-generated model (types, enums, required fields) and
    dump it back: a key the model does not know would be dropped, so any
    difference is an unknown or misspelt field."""
    model = getattr(ISTIO_MODELS[doc["apiVersion"]], doc["kind"])
    dumped = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
    if dumped != doc:
        raise ValueError(f"{doc['kind']} {doc['metadata']['name']}: fields unknown to the Istio {ISTIO_VERSION} "
                         f"schema: {doc} became {dumped}")


def validate(doc: dict) -> None:
    if doc["apiVersion"] in ISTIO_MODELS:
        validate_istio(doc)
    elif doc["apiVersion"] == OPERATOR:
        validate_operator(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_stack_file_is_covered():
    assert set(offline.stacks()) == {*K8S_STACKS, "local"}


def test_the_istio_pin_matches_the_schema_models():
    # cloudcoil-models-istio versions are <istio version>.<model release>.
    assert version("cloudcoil-models-istio").startswith(ISTIO_VERSION + ".")


@pytest.mark.parametrize("stack", K8S_STACKS)
def test_rendered_objects_pass_strict_schema_validation(stack, tmp_path):
    render.write(stack, tmp_path)
    # The manifest folder goes to `kubectl diff -f` as it is: every file in it
    # is one Kubernetes object, and every one passes its schema.
    manifests = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / render.MANIFESTS).iterdir())]
    for doc in manifests:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        validate(doc)
    assert Counter(d["kind"] for d in manifests) == EXPECTED_KINDS[stack]
    notes = [yaml.safe_load(p.read_text()) for p in (tmp_path / render.NOTES).iterdir()]
    # (Counter equality treats a missing type as zero of it: dev has no releases.)
    assert Counter(n["type"] for n in notes) == Counter({offline.HELM_RELEASE: EXPECTED_RELEASES[stack], PROVIDER: 1})
    assert all("kind" not in n for n in notes)


def _first(records, kind):
    return next(m for m in offline.manifests(records) if m["kind"] == kind)


def test_strict_validation_would_catch_a_misspelt_field(records):
    deployment = _first(records("prod"), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_istio_validation_would_catch_a_misspelt_field(records):
    rule = copy.deepcopy(_first(records("prod"), "DestinationRule"))
    rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxError"] = 5  # missing "s"
    with pytest.raises(ValueError, match="fields unknown to the Istio"):
        validate(rule)


@pytest.mark.parametrize(("kind", "change"), [
    ("DestinationRule", lambda spec: spec["trafficPolicy"]["loadBalancer"].update(simple="FASTEST")),
    ("VirtualService", lambda spec: spec["http"][0].update(timeout=60)),
    ("PeerAuthentication", lambda spec: spec["mtls"].update(mode="ON")),
])
def test_istio_validation_would_catch_a_wrong_value(records, kind, change):
    obj = copy.deepcopy(_first(records("prod"), kind))
    change(obj["spec"])
    with pytest.raises(pydantic.ValidationError):
        validate(obj)


def test_render_cli_writes_the_stack_and_refuses_unknown_stacks(tmp_path, capsys):
    assert render.main(["--stack", "dev", "--out", str(tmp_path / "dev")]) == 0
    assert len(list((tmp_path / "dev" / render.MANIFESTS).glob("*.yaml"))) == sum(EXPECTED_KINDS["dev"].values())
    with pytest.raises(SystemExit):
        render.main(["--stack", "nope", "--out", str(tmp_path / "x")])
