"""Helpers of the edge_vip tests (importable by name; conftest.py only holds
fixtures, as in tests/lab and tests/policy).

Every run passes its own inventory: ansible.cfg's default one is the lab's,
which these tests never touch.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import yaml

from tests.kit import PlaybookRun, ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "edge.yml"
# The validation play edge.yml imports first; it changes nothing.
VALIDATE = ROOT / "playbooks" / "validate.yml"
# Runs a role's validate and config tasks on this machine (connection local).
RENDER = ROOT / "bench" / "render.yml"

# Two edge hosts on a network of our own, valid for every role's validation.
# connection local: the validation play only evaluates assertions on the
# controller, and the rendering runs write under a scratch directory.
HOSTS = {"edge-a": "10.78.9.11", "edge-b": "10.78.9.12"}
VIP = "10.78.9.100/24"
BASE_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "edge_backends": [{"name": "backend-1", "address": "10.78.9.21", "port": 8000}],
    "nginx_lb_tls_enabled": False,
    "haproxy_lb_stats_password": "not-a-default-" + "x" * 8,
    "kernel_tuning_apply_global": False,
    "kernel_tuning_nofile": 20000,
}


def auth_pass() -> str:
    """A throwaway 8-character VRRP password (what `openssl rand -base64 6` makes)."""
    return secrets.token_urlsafe(6)


def vip_vars(**extra) -> dict:
    return {"edge_vip_addresses": [VIP], "edge_vip_auth_pass": auth_pass()} | extra


class Run(PlaybookRun):
    @property
    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.stats.values())


def write_inventory(directory: Path, group_vars: dict, host_vars: dict | None = None,
                    hosts: dict[str, str] | None = None) -> Path:
    """An inventory with group `edge` (HOSTS unless given: name -> ansible_host)."""
    hosts = HOSTS if hosts is None else hosts
    host_vars = host_vars or {}
    inventory = {"all": {"children": {"edge": {
        "hosts": {name: {"ansible_host": address} | host_vars.get(name, {}) for name, address in hosts.items()},
        "vars": BASE_VARS | group_vars,
    }}}}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def run(playbook: Path, inventory: Path, extra_vars: dict | None = None, *, limit: str | None = None,
        timeout: float = 180, verbose: bool = False) -> Run:
    """ansible-playbook with our inventory; the outcome read through the
    tests' run_results callback (tests/kit.py).  verbose: -v, which prints
    every task's result (set_fact's facts included) in `output`."""
    result = ansible_playbook(playbook, inventory, extra_vars, limit=limit, args=["-v"] if verbose else [],
                              env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
                              timeout=timeout)
    return Run(**vars(result))


def render(directory: Path, variables: dict, host_vars: dict | None = None) -> Run:
    """roles/edge_vip's validate and config tasks (bench/render.yml) for
    `localhost`, a member of group edge with edge-b, into directory/keepalived:
    the configuration lands only if the real `keepalived -t` accepted it.
    `variables` (group variables) usually start from vip_vars()."""
    hosts = {"localhost": HOSTS["edge-a"], "edge-b": HOSTS["edge-b"]}
    inventory = write_inventory(directory / "inventory", {
        "edge_vip_manage_service": False,
        "edge_vip_config_dir": str(directory / "keepalived"),
        "edge_vip_state_file": str(directory / "run" / "state"),
        "edge_vip_textfile_dir": str(directory / "textfile"),
    } | variables, host_vars, hosts)
    return run(RENDER, inventory, {"bench_role": "edge_vip"}, limit="localhost")
