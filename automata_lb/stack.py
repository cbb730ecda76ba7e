"""Changes to a Pulumi stack: its config file, edited in place (comments
kept), checked by running the program offline, and shown as an object diff.

A change is applied by `pulumi up -s STACK`; where the Pulumi CLI is not
installed the command is printed instead, with the diff to review.
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


@dataclass
class Change:
    stack: str
    values: dict[str, Any]          # unqualified key -> new value
    before: dict[str, Any]          # the same keys as the stack file had them (None: absent)
    diff: list[str]                 # object-level differences, for people

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


def _paths(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in _paths(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _paths(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: {json_short(a)} -> {json_short(b)}"]
    return []


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
    return Change(stack, merged, {k: now.get(k) for k in merged}, object_diff(before_objects, after_objects))


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
        self._apply({"trafficPolicy": {"canary": {"share": weight}}}, f"canary weight {weight}%")
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


__all__ = ["Change", "ConfigError", "StackCanary", "apply", "current", "effective", "plan", "write"]
