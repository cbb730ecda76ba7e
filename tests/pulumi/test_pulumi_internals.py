"""infra/offline.py runs the program on private Pulumi internals; pin them.

Pulumi's public testing API (`pulumi.runtime.set_mocks`, `Mocks`,
`set_all_config`) runs a test function, not a whole program run after run.
offline.py also subclasses the mock monitor and resets runtime globals, none of
which Pulumi promises to keep.  These tests list exactly what it uses, check
each still has the shape it relies on, and tie the list to the Pulumi version
it was checked against, so an upgrade fails here first, naming what to re-check.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import inspect
import tomllib
from pathlib import Path

import pytest
from pulumi.runtime import set_mocks
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import SETTINGS, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra import offline

CHECKED_AGAINST = "3.272.0"


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# Every private name offline.py uses: what it relies on, and a check of that shape.
PRIVATE = {
    "pulumi.runtime.mocks.MockMonitor": (
        "subclassed by RecordingMonitor; the monitor set_mocks(monitor=...) installs",
        lambda: "monitor" in _params(set_mocks)),
    "MockMonitor.__init__": (
        "takes the mocks",
        lambda: _params(MockMonitor.__init__) == ["self", "mocks"]),
    "MockMonitor.make_urn": (
        "make_urn(parent, type_, name) gives the URN the registration gets",
        lambda: _params(MockMonitor.make_urn) == ["self", "parent", "type_", "name"]),
    "MockMonitor.RegisterResource": (
        "overridden; called with the gRPC RegisterResourceRequest (parent, type, name, custom, provider), "
        "the base stores the resource in self.resources",
        lambda: _params(MockMonitor.RegisterResource) == ["self", "request"]
        and {"parent", "type", "name", "custom", "provider"}
        <= set(resource_pb2.RegisterResourceRequest.DESCRIPTOR.fields_by_name)),
    "MockMonitor.resources": (
        "a dict of URN -> registration, empty at first",
        lambda: MockMonitor(offline._Mocks()).resources == {}),
    "MockMonitor.resources[].state": (
        "a registration's state: what the mocks' new_resource returned",
        lambda: "state" in MockMonitor.ResourceRegistration._fields),
    "pulumi.runtime.settings.SETTINGS": (
        "SETTINGS.outputs.clear() drops the previous run's pending outputs (as pulumi.runtime.test does)",
        lambda: isinstance(SETTINGS.outputs, set)),
    "pulumi.runtime.settings.set_root_resource": (
        "set_root_resource(None) makes set_mocks create a fresh Stack for the next run",
        lambda: _params(set_root_resource) == ["root"]),
    "pulumi.runtime.stack.run_pulumi_func": (
        "run_pulumi_func(func) runs the program and waits for its outstanding RPCs",
        lambda: _params(run_pulumi_func) == ["func"] and asyncio.iscoroutinefunction(run_pulumi_func)),
    "pulumi.runtime.sync_await._sync_await": (
        "_sync_await(awaitable) drives run_pulumi_func on the current event loop",
        lambda: _params(_sync_await) == ["awaitable"]),
}


# Parsed when the module is collected, before any test runs: on Python 3.11
# an AST built while other code runs in between (a finalizer, another thread,
# as the Pulumi tests leave behind) can fail with a spurious "SystemError: AST
# constructor recursion depth mismatch" (CPython gh-106905; seen once in CI).
OFFLINE_SOURCE = ast.parse(Path(offline.__file__).read_text())


def _used_by_offline() -> set[str]:
    """The private Pulumi names in infra/offline.py's source."""
    used = set()
    for node in ast.walk(OFFLINE_SOURCE):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pulumi.runtime."):
            used |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Attribute) and ast.unparse(node).startswith("pulumi.runtime.") \
                and ast.unparse(node).count(".") > 2:
            used.add(ast.unparse(node))
    monitor = next(n for n in ast.walk(OFFLINE_SOURCE)
                   if isinstance(n, ast.ClassDef) and n.name == offline.RecordingMonitor.__name__)
    own = {n.name for n in monitor.body if isinstance(n, ast.FunctionDef)}
    assigned = {t.attr for n in ast.walk(monitor) if isinstance(n, ast.Assign | ast.AnnAssign)
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
    for node in ast.walk(monitor):
        if not isinstance(node, ast.Attribute):
            continue
        owner = ast.unparse(node.value)
        if owner == "super()" or (owner == "self" and node.attr not in own | assigned):
            used.add(f"MockMonitor.{node.attr}")
        elif isinstance(node.value, ast.Subscript) and ast.unparse(node.value.value) == "self.resources":
            used.add(f"MockMonitor.resources[].{node.attr}")
    used |= {f"MockMonitor.{name}" for name in own if hasattr(MockMonitor, name)}
    return used


def test_offline_uses_exactly_the_private_names_listed_here():
    # A new private name in offline.py goes into PRIVATE, with what it relies on.
    assert _used_by_offline() == set(PRIVATE)


def test_the_pinned_pulumi_is_the_one_they_were_checked_against():
    project = tomllib.loads((offline.ROOT / "pyproject.toml").read_text())["project"]
    pinned = next(d.partition("==")[2] for d in project["dependencies"] if d.startswith("pulumi=="))
    installed = importlib.metadata.version("pulumi")
    recheck = "\n".join(f"  - {name}: {why}" for name, (why, _) in PRIVATE.items())
    assert pinned == installed == CHECKED_AGAINST, (
        f"pulumi is {pinned} in pyproject.toml and {installed} installed, but infra/offline.py's use of private "
        f"Pulumi internals was checked against {CHECKED_AGAINST}.  Re-check each in the new version's source "
        f"(pulumi/runtime/), run tests/pulumi, then set CHECKED_AGAINST in {Path(__file__).name}:\n{recheck}")


@pytest.mark.parametrize("name", PRIVATE)
def test_each_private_name_still_has_the_shape_offline_relies_on(name):
    why, shape = PRIVATE[name]
    assert shape(), f"{name} changed in pulumi {importlib.metadata.version('pulumi')}: offline.py relies on: {why}"
