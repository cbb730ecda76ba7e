"""Helpers the Pulumi tests share (a plain module: `conftest` names clash
between test folders, so tests import from here)."""

from __future__ import annotations

from infra.offline import Record, is_manifest

K8S_STACKS = ["dev", "staging", "prod"]


def objects(records: list[Record], kind: str) -> dict[str, dict]:
    """Kubernetes objects of one kind, by metadata.name."""
    return {r.inputs["metadata"]["name"]: r.inputs for r in records
            if is_manifest(r) and r.inputs["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only
