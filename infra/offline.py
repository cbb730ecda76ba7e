"""Run the Pulumi program offline, under Pulumi's own mocks, and record what it creates.

This is how the program is rendered (infra/render.py) and tested without a
Pulumi CLI or a cluster: the real infra/__main__.py runs unchanged, stack
config is assembled the way the CLI does it (Pulumi.yaml defaults overlaid by
stacks/Pulumi.<stack>.yaml, values passed as strings), and every resource
registration is captured instead of reaching a provider.
"""

from __future__ import annotations

import asyncio
import json
import runpy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import SETTINGS, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = ROOT / "Pulumi.yaml"
MAIN = ROOT / "infra" / "__main__.py"


@dataclass(frozen=True)
class Record:
    """One registered resource: its Pulumi type and name, URN and inputs, and
    the provider it was registered with ("URN::ID"; empty: the default one)."""

    type: str
    name: str
    urn: str
    custom: bool
    inputs: dict[str, Any]
    provider: str = ""

    @property
    def provider_urn(self) -> str:
        return self.provider.rpartition("::")[0]

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]


def _load_yaml(path: Path) -> Any:
    # The C parser: Pulumi.yaml is read on every run and the pure-Python one
    # made that a noticeable share of the test suite.
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def project() -> dict:
    return _load_yaml(PROJECT_FILE)


def stack_dir() -> Path:
    return ROOT / project()["stackConfigDir"]


def stacks() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in stack_dir().glob("Pulumi.*.yaml"))


def _as_config_string(value: Any) -> str:
    # The engine hands every config value to the program as a string; objects
    # and arrays as JSON.  pulumi.Config parses them back.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Config as the CLI would pass it: declared defaults, then the stack file,
    then `overrides` (unqualified keys, as `pulumi config set` would add them)."""
    proj = project()
    name = proj["name"]
    stack_file = stack_dir() / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        raise FileNotFoundError(f"no stack {stack!r}: {stack_file} does not exist (stacks: {', '.join(stacks())})")
    values = {f"{name}:{key}": spec["default"] for key, spec in proj.get("config", {}).items() if "default" in spec}
    values.update((_load_yaml(stack_file) or {}).get("config", {}))
    values.update({f"{name}:{key}": value for key, value in (overrides or {}).items()})
    return {key: _as_config_string(value) for key, value in values.items()}


def plain(value: Any) -> Any:
    """Mocks hand numbers back as floats; Kubernetes wants integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class _Mocks(pulumi.runtime.Mocks):
    """Providers echo their inputs; nothing is created anywhere."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        raise NotImplementedError(f"the program must not call provider functions offline: {args.token}")


class RecordingMonitor(MockMonitor):
    """Records every registration and, unlike the stock mock, refuses a URN
    registered twice, as the Pulumi engine does."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[Record] = []
        # Registrations arrive on several threads at once; check-and-claim
        # under a lock, or two twins could both pass the check.
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        with self._lock:
            if urn in self._claimed:
                raise ValueError(f"duplicate resource URN {urn}")
            self._claimed.add(urn)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.records.append(Record(request.type, request.name, urn, request.custom,
                                       plain(self.resources[urn].state), request.provider))
        return response


def execute(program: Callable[[], Any], stack: str, config: dict[str, str]) -> list[Record]:
    """Run `program` as stack `stack` with `config` under mocks; return what it registered."""
    # Each run gets its own event loop: a failed program leaves tasks behind,
    # and the runtime awaits every task of its loop, so they would surface in
    # the next run.  A fresh loop stays current for whatever runs next.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = _Mocks()
    monitor = RecordingMonitor(mocks)
    # A fresh root Stack and no stale outputs: the runtime keeps both in
    # globals (pulumi.runtime.test clears the latter the same way).
    set_root_resource(None)
    SETTINGS.outputs.clear()
    pulumi.runtime.set_mocks(mocks, project=project()["name"], stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config)
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(asyncio.new_event_loop())
    return monitor.records


def run(stack: str, overrides: dict[str, Any] | None = None) -> list[Record]:
    """Run infra/__main__.py for `stack`, as `pulumi up -s STACK` would.

    Raises whatever the program raises (e.g. settings.ConfigError).
    """
    return execute(lambda: runpy.run_path(str(MAIN), run_name="__main__"), stack, stack_config(stack, overrides))


# Apply order for review and `kubectl apply -f DIR`: namespace first; the
# mesh's security before the routes that open traffic.
_KIND_ORDER = ["Namespace", "ConfigMap", "ServiceAccount", "Service", "Deployment", "PodDisruptionBudget",
               "HorizontalPodAutoscaler", "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy",
               "DestinationRule", "Gateway", "VirtualService", "Telemetry",
               "ServiceMonitor", "PodMonitor", "PrometheusRule"]
# A Helm release is a Kubernetes-provider resource but not an object of the
# cluster's API: it is rendered with its chart, version and values instead.
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def is_manifest(record: Record) -> bool:
    return record.type.startswith("kubernetes:") and record.type != HELM_RELEASE


def manifests(records: list[Record]) -> list[dict]:
    """The Kubernetes objects among the records, as plain manifests."""
    objects = [r.inputs for r in records if is_manifest(r)]
    return sorted(objects, key=lambda o: (_KIND_ORDER.index(o["kind"]) if o["kind"] in _KIND_ORDER else len(_KIND_ORDER),
                                          o["metadata"]["name"]))
