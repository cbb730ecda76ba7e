"""Helpers the Pulumi tests share (a plain module: `conftest` names clash
between test folders, so tests import from here)."""

from __future__ import annotations

from cloudcoil.models.prometheus_operator import v1 as operator

from infra.monitoring import OPERATOR
from infra.offline import Record, is_manifest

K8S_STACKS = ["dev", "staging", "prod"]


def objects(records: list[Record], kind: str) -> dict[str, dict]:
    """Kubernetes objects of one kind, by metadata.name."""
    return {r.inputs["metadata"]["name"]: r.inputs for r in records
            if is_manifest(r) and r.inputs["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def validate_operator(doc: dict) -> None:
    """Parse a Prometheus Operator object with the CRD-generated model and
    dump it back: an unknown or misspelt field would be dropped, a wrong type
    or enum refused."""
    assert doc["apiVersion"] == OPERATOR
    model = getattr(operator, doc["kind"])
    dumped = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
    if dumped != doc:
        raise ValueError(f"{doc['kind']} {doc['metadata']['name']}: fields unknown to the operator schema: "
                         f"{doc} became {dumped}")
