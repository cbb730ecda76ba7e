"""Every stack is rendered with the real renderer and every object validated,
strictly (unknown keys fail), against the pinned Kubernetes OpenAPI schema."""

from __future__ import annotations

from collections import Counter

import kubernetes_validate
import pytest
import yaml
from manifest_helpers import K8S_STACKS

from infra import offline, render

# The Kubernetes version the program targets (preStop `sleep` needs >= 1.30).
K8S_VERSION = "1.31.0"

EXPECTED_KINDS = {
    "dev": {"Namespace": 1, "ConfigMap": 1, "ServiceAccount": 3, "Service": 3, "Deployment": 3,
            "PodDisruptionBudget": 3},
    "staging": {"Namespace": 1, "ConfigMap": 1, "ServiceAccount": 3, "Service": 3, "Deployment": 6,
                "PodDisruptionBudget": 3, "HorizontalPodAutoscaler": 3},
}
EXPECTED_KINDS["prod"] = EXPECTED_KINDS["staging"]


def test_every_stack_file_is_covered():
    assert set(offline.stacks()) == {*K8S_STACKS, "local"}


@pytest.mark.parametrize("stack", K8S_STACKS)
def test_rendered_objects_pass_strict_schema_validation(stack, tmp_path):
    paths = render.write(stack, tmp_path)
    docs = [yaml.safe_load(p.read_text()) for p in paths]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert Counter(d["kind"] for d in docs) == EXPECTED_KINDS[stack]


def test_strict_validation_would_catch_a_misspelt_field(records):
    deployment = offline.manifests(records("prod"))[-8]  # any Deployment
    assert deployment["kind"] == "Deployment"
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_render_cli_writes_the_stack_and_refuses_unknown_stacks(tmp_path, capsys):
    assert render.main(["--stack", "dev", "--out", str(tmp_path / "dev")]) == 0
    assert len(list((tmp_path / "dev").glob("*.yaml"))) == sum(EXPECTED_KINDS["dev"].values())
    with pytest.raises(SystemExit):
        render.main(["--stack", "nope", "--out", str(tmp_path / "x")])
