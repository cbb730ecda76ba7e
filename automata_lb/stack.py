"""Changes to a Pulumi stack: its config file, edited in place (comments
kept), checked by running the program offline, and shown as an object diff.

A change is applied by `pulumi up -s STACK`; where the Pulumi CLI is not
installed the command is printed instead, with the diff to review.  What a
change does to capacity is read from the same two sets of objects
(`capacity_drops`), so it cannot disagree with the diff.
"""

from __future__ import annotations

import asyncio
import copy
import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import offline
from infra.settings import ConfigError

from .targets import ROOT, TargetError
from .yamlio import plain, round_trip

PROJECT = "automata"


def stack_file(stack: str) -> Path:
    return ROOT / "stacks" / f"Pulumi.{stack}.yaml"


def current(stack: str) -> dict[str, Any]:
    """The stack's own config values (unqualified keys), without the defaults."""
    doc = round_trip().load(stack_file(stack).read_text()) or {}
    return {k.split(":", 1)[1]: plain(v) for k, v in (doc.get("config") or {}).items() if k.startswith(PROJECT + ":")}


def effective(stack: str) -> dict[str, Any]:
    """Every config value as the program sees it: defaults, then the stack."""
    project = offline.project()
    values = {k: spec.get("default") for k, spec in project.get("config", {}).items()}
    values.update(current(stack))
    return values


def protected(stack: str) -> bool:
    """Production: changes are confirmed, and capacity drops need an explicit flag."""
    return effective(stack).get("protected") is True


@dataclass
class Change:
    stack: str
    values: dict[str, Any]          # unqualified key -> new value
    before: dict[str, Any]          # the same keys as the stack file had them (None: absent)
    diff: list[str]                 # object-level differences, for people
    drops: list[str]                # what would lower capacity, for people (capacity_drops)

    @property
    def empty(self) -> bool:
        return not self.diff


def _objects(records) -> dict[str, dict]:
    objects = {}
    for r in records:
        if offline.is_manifest(r):
            objects[f"{r.inputs['kind']}/{r.inputs['metadata']['name']}"] = r.inputs
        elif r.custom:
            objects[f"{r.type.rsplit(':', 1)[-1]}/{r.name}"] = r.inputs
    return objects


def _changes(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, before, after) of every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [c for k in sorted(set(a) | set(b), key=str)
                for c in _changes(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [c for i, (x, y) in enumerate(zip(a, b, strict=True)) for c in _changes(x, y, f"{path}[{i}]")]
    return [(path, a, b)] if a != b else []


def _paths(a: Any, b: Any) -> list[str]:
    return [f"{path}: {json_short(x)} -> {json_short(y)}" for path, x, y in _changes(a, b)]


def json_short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def object_diff(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            lines.append(f"+ {key}")
        elif key not in after:
            lines.append(f"- {key}")
        else:
            lines += [f"~ {key} {p}" for p in _paths(before[key], after[key])]
    return lines


# --- capacity ---------------------------------------------------------------------

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
HPA = "HorizontalPodAutoscaler"
PDB = "PodDisruptionBudget"
# Pod counts inside other objects, e.g. the ingress gateway's Helm values
# (autoscaling.minReplicas); any of these going down is a capacity drop.
REPLICA_FIELDS = {"replicas", "minReplicas", "maxReplicas", "replicaCount", "autoscaleMin", "autoscaleMax"}


def _is_canary(workload: dict) -> bool:
    # The canary track (infra/naming.track_selector_labels) is a release's
    # fixed handful of pods, not serving capacity: removing it with its
    # release (rollback, canary-abort) must never need a flag.
    return (workload.get("spec", {}).get("selector", {}).get("matchLabels") or {}).get("version") == "canary"


def _hpa_bounds(objects: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """{workload key: (minReplicas, maxReplicas)} of the HPAs among `objects`."""
    bounds = {}
    for key, obj in objects.items():
        if key.startswith(HPA + "/"):
            spec = obj.get("spec", {})
            target = spec.get("scaleTargetRef", {})
            bounds[f"{target.get('kind')}/{target.get('name')}"] = (spec.get("minReplicas", 1), spec.get("maxReplicas"))
    return bounds


def _pods(workload: dict | None, hpa: tuple[int, int] | None) -> tuple[int, int]:
    """Fewest and most pods a workload runs: its HPA's bounds, else its replicas (Kubernetes' default 1)."""
    if workload is None:
        return 0, 0
    if hpa is not None:
        return hpa
    replicas = workload.get("spec", {}).get("replicas")
    return (1, 1) if replicas is None else (replicas, replicas)


def _pdb_drop(before: dict, after: dict | None) -> str | None:
    if after is None:
        return "removed: node drains may then evict every pod at once"
    old, new = before.get("spec", {}), after.get("spec", {})
    for field, worse in (("maxUnavailable", lambda a, b: b > a), ("minAvailable", lambda a, b: b < a)):
        a, b = _count(old.get(field)), _count(new.get(field))
        if a is not None and b is not None and a[1] == b[1] and worse(a[0], b[0]):
            return f"{field} {old.get(field)} -> {new.get(field)}"
    return None


def _count(value: Any) -> tuple[int, bool] | None:
    """A PDB bound as (number, is a percentage), or None when there is none."""
    if isinstance(value, int):
        return value, False
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return int(value[:-1]), True
    return None


def capacity_drops(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """What in the change from `before` to `after` (objects by kind/name) lowers
    capacity: fewer pods at least or at most, an HPA or a PDB removed or
    loosened, a replica count inside another object (Helm values) going down."""
    drops = []
    hpas_before, hpas_after = _hpa_bounds(before), _hpa_bounds(after)
    for key, obj in sorted(before.items()):
        kind = key.partition("/")[0]
        if kind in WORKLOAD_KINDS and not _is_canary(obj):
            (low, high), (new_low, new_high) = _pods(obj, hpas_before.get(key)), _pods(after.get(key), hpas_after.get(key))
            if key not in after:
                drops.append(f"{key}: removed ({low}-{high} pods)")
            elif key in hpas_before and key not in hpas_after:
                drops.append(f"{key}: its {HPA} removed, {low}-{high} pods -> {new_low} pinned")
            else:
                drops += [f"{key}: {bound} {old} -> {new} pods"
                          for bound, old, new in (("at least", low, new_low), ("at most", high, new_high)) if new < old]
        elif kind == PDB:
            problem = _pdb_drop(obj, after.get(key))
            if problem:
                drops.append(f"{key}: {problem}")
        elif kind != HPA and key in after:  # HPAs are judged with their workload above
            drops += [f"{key} {path}: {a} -> {b}" for path, a, b in _changes(obj, after[key])
                      if path.rpartition(".")[2] in REPLICA_FIELDS and isinstance(a, int) and isinstance(b, int) and b < a]
    return drops


# --- planning ----------------------------------------------------------------------

def plan(stack: str, values: dict[str, Any]) -> Change:
    """Check `values` by running the program with them; raise ConfigError (naming
    the key) when refused.  Nothing is written."""
    own = current(stack)
    now = effective(stack)
    merged = {}
    for key, value in values.items():
        if now.get(key) == value:
            continue  # already so: nothing to write
        if isinstance(value, dict) and isinstance(own.get(key), dict):
            merged[key] = _merge(own[key], value)
        else:
            merged[key] = value
    try:
        before_objects = _objects(offline.run(stack))
        after_objects = _objects(offline.run(stack, merged))
    finally:
        _close_loop()
    return Change(stack, merged, {k: now.get(k) for k in merged}, object_diff(before_objects, after_objects),
                  capacity_drops(before_objects, after_objects))


def _close_loop() -> None:
    """The offline runner leaves a fresh event loop current for whatever runs
    next; a CLI runs nothing next, and an unclosed loop complains at exit."""
    loop = asyncio.get_event_loop_policy().get_event_loop()
    if not loop.is_closed():
        loop.close()


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write(stack: str, values: dict[str, Any]) -> None:
    """Set (or with None, remove) keys in the stack file, keeping its comments."""
    y = round_trip()
    path = stack_file(stack)
    doc = y.load(path.read_text()) or {}
    config = doc.setdefault("config", {})
    for key, value in values.items():
        qualified = f"{PROJECT}:{key}"
        if value is None:
            config.pop(qualified, None)
        else:
            config[qualified] = value
    buffer = io.StringIO()
    y.dump(doc, buffer)
    path.write_text(buffer.getvalue())


def pulumi_up_command(stack: str) -> list[str]:
    return ["pulumi", "up", "--stack", stack, "--yes"]


def apply(stack: str) -> tuple[bool, str]:
    """Run `pulumi up` when the CLI exists; else say what to run."""
    command = pulumi_up_command(stack)
    if not shutil.which("pulumi"):
        return False, " ".join(command[:-1])
    proc = subprocess.run(command, cwd=ROOT)
    return proc.returncode == 0, " ".join(command)


def share_values(share: int) -> dict[str, Any]:
    """The stack config that sends `share` percent of canary-class traffic to the canary."""
    return {"trafficPolicy": {"canary": {"share": share}}}


def canary_values(image: str | None, share: int) -> dict[str, Any]:
    """The stack config of a canary: its image, at `share` percent."""
    return {"canaryImage": image, **share_values(share)}


class StackCanary:
    """A stack as a progressive rollout's tier: every weight, image and
    rollback is a checked change of the stack file followed by `pulumi up`;
    without the Pulumi CLI a step cannot be applied, and the rollout stops
    there (its record says where; `--resume` goes on once it can)."""

    def __init__(self, stack: str, say: Callable[[str], None]) -> None:
        self.stack, self.say = stack, say

    def _apply(self, values: dict[str, Any], what: str) -> None:
        change = plan(self.stack, values)
        if change.empty:
            return
        write(self.stack, change.values)
        applied, cmd = apply(self.stack)
        if not applied:
            raise TargetError(f"{what}: stacks/Pulumi.{self.stack}.yaml says so, but `{cmd}` did not run here")
        self.say(f"{what}: applied ({cmd})")

    def set_weight(self, weight: int) -> dict:
        self._apply(share_values(weight), f"canary weight {weight}%")
        return {}

    def deploy(self, release: str) -> None:
        self._apply({"canaryImage": release}, f"canary image {release}")

    def promote(self, release: str) -> None:
        self._apply({"image": release}, f"stable image {release}")

    def restore_canary(self, releases: dict[str, str]) -> None:
        self._apply({"canaryImage": releases.get("canaryImage")}, "canary image back")

    def weights(self) -> dict[str, dict[str, int | None]]:
        share = (effective(self.stack).get("trafficPolicy") or {}).get("canary", {}).get("share")
        return {f"stack {self.stack} (config)": {"istio": share}}


__all__ = ["Change", "ConfigError", "StackCanary", "apply", "canary_values", "capacity_drops", "current", "effective",
           "plan", "protected", "share_values", "write"]
