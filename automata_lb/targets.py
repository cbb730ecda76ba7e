"""What a command acts on: the lab, the edge VMs of an inventory, or a stack.

The lab describes itself in .lab/lab.json; an inventory is read with
`ansible-inventory` and its edge nodes are reached over SSH with the same
connection settings the playbook uses; a stack is its config file.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .yamlio import plain, round_trip

ROOT = Path(__file__).resolve().parent.parent
LAB_JSON = ROOT / ".lab" / "lab.json"
LAB_INVENTORY = ROOT / ".lab" / "inventory"  # the running lab's copy of inventories/lab (lab/stack.py)
LAB_RECORDS = ROOT / ".lab" / "automata-lb"
CHECKOUT_RECORDS = ROOT / ".automata-lb"
STACKS = ("dev", "staging", "prod")


def record_file(target: str, kind: str, suffix: str) -> Path:
    """Where the CLI keeps a target's records of one kind (its change history,
    its progressive rollout): with the target, so every operator of it reads
    the same ones.
    - the lab: under .lab/, gone with the lab at `make down`;
    - an inventory: beside it, in <inventory folder>/.automata-lb/ (Ansible
      reads no hidden entry of an inventory folder), shared wherever the
      inventory is, whatever path an operator names it by;
    - a stack (`stack-<name>`): under the checkout's .automata-lb/."""
    if target == "lab":
        return LAB_RECORDS / f"{kind}.{suffix}"
    if target.startswith("stack-"):
        return CHECKOUT_RECORDS / kind / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', target).strip('_')}.{suffix}"
    path = Path(target)
    folder = path if path.is_dir() else path.parent
    return folder / ".automata-lb" / f"{kind}.{suffix}"


class TargetError(RuntimeError):
    """The target cannot be reached or described (exit code 3)."""


# The role variables that say where a node's load balancers keep what the
# CLI reads and edits.  Their values come from the inventory, else from the
# roles' own defaults, read from the roles: declared once, in the roles.
_PATH_VARIABLES = {"nginx_lb": ("nginx_lb_conf_dir", "nginx_lb_staging_dir"),
                   "haproxy_lb": ("haproxy_lb_config_dir", "haproxy_lb_admin_socket")}


@functools.cache
def _role_defaults() -> dict[str, str]:
    found = {}
    for role, names in _PATH_VARIABLES.items():
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        found |= {name: defaults[name] for name in names}
    return found


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its NGINX tree, its HAProxy configuration and
    HAProxy's runtime API socket."""

    nginx_conf_dir: str
    nginx_staging_dir: str
    haproxy_config_dir: str
    haproxy_socket: str

    @property
    def haproxy_config(self) -> str:
        return f"{self.haproxy_config_dir}/haproxy.cfg"

    @classmethod
    def of(cls, variables: dict, where: str) -> NodePaths:
        """From a node's variables over the roles' defaults.  A default may
        name another of these variables ("{{ nginx_lb_conf_dir }}/staging");
        any other template is refused: the CLI reads the inventory without
        Ansible's templating."""
        values = _role_defaults() | {k: variables[k] for k in _role_defaults() if k in variables}
        for name, value in values.items():
            value = str(value)
            for other, literal in values.items():
                if other != name and "{{" not in str(literal):
                    value = re.sub(r"\{\{\s*" + other + r"\s*\}\}", str(literal), value)
            if "{{" in value or not value.startswith("/"):
                raise TargetError(f"{where}: {name} must be an absolute path the CLI can read as is, not {value!r}")
            values[name] = value
        return cls(values["nginx_lb_conf_dir"], values["nginx_lb_staging_dir"], values["haproxy_lb_config_dir"],
                   values["haproxy_lb_admin_socket"])


@dataclass(frozen=True)
class EdgeNode:
    name: str
    address: str
    user: str = "root"
    port: int = 22
    key: str | None = None
    ssh_args: tuple[str, ...] = ()
    paths: NodePaths = field(default_factory=lambda: NodePaths.of({}, "the roles' defaults"))
    # ansible_become: the user logs in as itself and runs what needs root
    # through sudo, as the playbook does; sudo must not ask (NOPASSWD for the
    # automation user), since nothing here can type a password.
    become: bool = False

    def ssh_argv(self, *command: str) -> list[str]:
        control = Path(tempfile.gettempdir()) / f"automata-lb-ssh-{os.getuid()}"
        control.mkdir(mode=0o700, exist_ok=True)
        argv = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                # One TCP+SSH handshake per node for a whole `status --watch`.
                "-o", "ControlMaster=auto", "-o", f"ControlPath={control}/%C", "-o", "ControlPersist=60s",
                *self.ssh_args]
        if self.key:
            argv += ["-i", self.key]
        if self.become and command:
            # ssh hands the words to the login shell as one line: the whole
            # line (a pipeline too) runs under sudo, not its first command.
            command = ("sudo -n -- sh -c " + shlex.quote(" ".join(command)),)
        return [*argv, f"{self.user}@{self.address}", *command]

    def run(self, *command: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.ssh_argv(*command), input=stdin, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"{self.name}: no answer over SSH within {timeout:.0f}s") from exc


@dataclass(frozen=True)
class Backend:
    name: str
    address: str
    port: int
    version: str = "stable"
    app_url: str | None = None      # reachable from here (the lab publishes every backend on loopback)
    admin_url: str | None = None    # the lab's fault-injection port
    container: str | None = None    # the lab's container


@dataclass(frozen=True)
class Target:
    kind: str                        # "lab" | "inventory"
    name: str                        # "lab" or the inventory path
    inventory: Path
    edges: tuple[EdgeNode, ...]
    backends: tuple[Backend, ...]
    prometheus_url: str | None = None
    production: bool = False
    # How to give it a Prometheus, for a command that needs one.
    prometheus_missing: str = "set monitoring_prometheus_url in the inventory"
    # An inventory's: the playbook that starts and stops one backend instance,
    # and the instances scale-up may start (automata_lb/instances.py).
    instance_playbook: Path | None = None
    instance_spares: tuple[dict, ...] = ()


def edge_var_file(inventory: Path, name: str) -> Path:
    """The group_vars file of the edge group that defines `name`."""
    directory = inventory if inventory.is_dir() else inventory.parent
    candidates = sorted((directory / "group_vars").glob("edge/*.yml")) + sorted((directory / "group_vars").glob("edge.yml"))
    for path in candidates:
        if re.search(rf"^{re.escape(name)}:", path.read_text(), re.M):
            return path
    if candidates:
        return candidates[0]
    raise TargetError(f"{directory}: no group_vars for group 'edge' to hold {name}")


def edge_var(inventory: Path, name: str, default: Any = None) -> Any:
    """An edge variable as the inventory's file spells it (plain data, not templated)."""
    doc = round_trip().load(edge_var_file(inventory, name).read_text()) or {}
    return plain(doc.get(name, default))


def _inventory_backends(path: Path) -> list[tuple[str, dict]]:
    return [("stable", b) for b in edge_var(path, "edge_backends", []) or []] + \
           [("canary", b) for b in edge_var(path, "edge_canary_backends", []) or []]


def _truth(value: object) -> bool:
    """An inventory boolean as Ansible reads it (true, yes, 1, on)."""
    return str(value).strip().lower() in ("true", "yes", "1", "on", "y", "t")


def _ssh_common_args(value: str | None) -> tuple[str, ...]:
    return tuple(shlex.split(value)) if value else ()


def _lab_group_vars() -> dict:
    values = {name: edge_var(LAB_INVENTORY, name) for name in _role_defaults()}
    return {name: value for name, value in values.items() if value is not None}


def lab() -> Target:
    if not LAB_JSON.exists():
        raise TargetError(f"the lab is not up ({LAB_JSON} is missing): run `make lab`")
    lab = json.loads(LAB_JSON.read_text())
    common = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR")
    paths = NodePaths.of(_lab_group_vars(), f"{LAB_INVENTORY}")
    edges = tuple(EdgeNode(e["name"], e["address"], e["ssh"]["user"], e["ssh"]["port"], e["ssh"]["key"], common, paths)
                  for e in lab["edges"])
    described = {b["name"]: Backend(b["name"], b["address"], b["port"], b["version"], b["endpoints"]["app"],
                                    b["endpoints"]["admin"], b["container"]) for b in lab["backends"]}
    # The inventory says which instances the load balancers serve (scaling
    # adds some the lab did not start); lab.json adds what it publishes.
    backends = tuple(described.get(b["name"]) or Backend(b["name"], b["address"], int(b["port"]), track,
                                                         container=f"automata-lab-{b['name']}")
                     for track, b in _inventory_backends(LAB_INVENTORY))
    return Target("lab", "lab", LAB_INVENTORY, edges, backends,
                  prometheus_url=lab.get("prometheus", {}).get("url"),
                  prometheus_missing="this lab has none (`make lab` starts it)")


def inventory(path: Path) -> Target:
    """Edge nodes and backends of an inventory, as Ansible resolves them."""
    if not path.exists():
        raise TargetError(f"--inventory {path}: no such inventory")
    ansible = Path(sys.executable).parent / "ansible-inventory"
    proc = subprocess.run([str(ansible if ansible.exists() else "ansible-inventory"), "-i", str(path), "--list"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    if proc.returncode != 0:
        raise TargetError(f"--inventory {path}: ansible-inventory failed: {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    names = _group_hosts(data, "edge")
    if not names:
        raise TargetError(f"--inventory {path}: no hosts in group 'edge'")
    edges = []
    for name in names:
        hv = hostvars.get(name, {})
        become = _truth(hv.get("ansible_become"))
        for variable, supported in (("ansible_become_method", "sudo"), ("ansible_become_user", "root")):
            if become and str(hv.get(variable, supported)) != supported:
                raise TargetError(f"--inventory {path}, host {name}: {variable} is {hv[variable]!r}; "
                                  f"the CLI becomes {supported!r} only")
        key = hv.get("ansible_ssh_private_key_file")
        edges.append(EdgeNode(name, hv.get("ansible_host", name), hv.get("ansible_user", "root"),
                              int(hv.get("ansible_port", 22)), str(ROOT / key) if key and not os.path.isabs(key) else key,
                              _ssh_common_args(hv.get("ansible_ssh_common_args")),
                              NodePaths.of(hv, f"--inventory {path}, host {name}"), become))
    first = hostvars.get(names[0], {})
    backends = [Backend(b["name"], b["address"], int(b["port"]), "stable") for b in first.get("edge_backends", [])]
    backends += [Backend(b["name"], b["address"], int(b["port"]), "canary")
                 for b in first.get("edge_canary_backends", [])]
    return Target("inventory", str(path), path, tuple(edges), tuple(backends),
                  prometheus_url=first.get("monitoring_prometheus_url"),
                  production=path.resolve() != LAB_INVENTORY.resolve(),
                  instance_playbook=_instance_playbook(path, first.get("automata_lb_instance_playbook")),
                  instance_spares=_instance_spares(path, first.get("automata_lb_instance_spares")))


def _instance_playbook(inventory: Path, value: object) -> Path | None:
    """automata_lb_instance_playbook: a path, relative to the inventory's folder."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "{{" in value:
        raise TargetError(f"--inventory {inventory}: automata_lb_instance_playbook must be a plain path "
                          f"(relative to the inventory's folder), not {value!r}")
    folder = inventory if inventory.is_dir() else inventory.parent
    return (folder / value).resolve()


def _instance_spares(inventory: Path, value: object) -> tuple[dict, ...]:
    """automata_lb_instance_spares: [{name, address, port}], the instances scale-up may start."""
    if value in (None, ""):
        return ()
    problem = "a list of {name, address, port}"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"name", "address", "port"}:
                problem = f"item {i} is {item!r}, not {{name, address, port}}"
                break
            if not str(item["port"]).isdigit() or not 0 < int(item["port"]) < 65536:
                problem = f"item {i} ({item['name']}): port {item['port']!r} is not a TCP port"
                break
        else:
            return tuple({"name": str(s["name"]), "address": str(s["address"]), "port": int(s["port"])}
                         for s in value)
    raise TargetError(f"--inventory {inventory}: automata_lb_instance_spares: {problem}")


def _group_hosts(data: dict, group: str) -> list[str]:
    hosts = list(data.get(group, {}).get("hosts", []))
    for child in data.get(group, {}).get("children", []):
        hosts += [h for h in _group_hosts(data, child) if h not in hosts]
    return hosts
