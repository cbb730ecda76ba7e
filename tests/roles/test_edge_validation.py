"""The validation that runs before any host changes cannot pass on nothing:
an inventory without edge hosts is refused, naming the group.

The validation playbook (playbooks/validate.yml, which playbooks/edge.yml
imports first) on inventories without edge hosts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.kit import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "playbooks" / "validate.yml"
EDGE = ROOT / "playbooks" / "edge.yml"
PROD = ROOT / "inventories" / "prod"

SERVERS = [{"name": "backend-1", "address": "192.0.2.21", "port": 8000}]
BASE_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "nginx_lb_tls_enabled": False,
    "haproxy_lb_stats_password": "not-a-default-" + "x" * 8,
    "kernel_tuning_nofile": 20000,
}


def _inventory(directory: Path, groups: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": BASE_VARS | {"edge_backends": SERVERS}, "children": groups}}))
    return path


@pytest.mark.parametrize("playbook", [VALIDATE, EDGE], ids=["validate.yml", "edge.yml"])
def test_the_production_inventory_without_hosts_is_refused_naming_the_group(playbook):
    # As shipped, inventories/prod lists no host (they are commented out):
    # a run must stop, not report "no hosts matched" and succeed.
    result = ansible_playbook(playbook, PROD, timeout=120)
    assert result.rc != 0, result.output[-3000:]
    assert list(result.failed) == ["localhost"], result.failed
    message = result.failed["localhost"]["msg"]
    assert message.startswith(f"no host in group 'edge' in inventory {PROD}"), message
    # Nothing after the check ran: no role was even validated.
    assert result.stats["localhost"]["ok"] == 0 and set(result.stats) == {"localhost"}, result.stats


def test_an_inventory_whose_edge_group_is_empty_is_refused(tmp_path):
    # Hosts elsewhere do not count: the edge plays would match none of them.
    inventory = _inventory(tmp_path, {"edge": {"hosts": {}}, "monitoring": {"hosts": {"prom-1": {}}}})
    result = ansible_playbook(VALIDATE, inventory, timeout=120)
    assert result.rc != 0, result.output[-3000:]
    (failure,) = result.failed.values()
    assert failure["msg"].startswith(f"no host in group 'edge' in inventory {inventory}"), failure


def test_a_limit_that_leaves_no_edge_host_is_refused(tmp_path):
    inventory = _inventory(tmp_path, {"edge": {"hosts": {"edge-a": {"ansible_host": "192.0.2.11"}}},
                                      "monitoring": {"hosts": {"prom-1": {"ansible_host": "192.0.2.5"}}}})
    result = ansible_playbook(VALIDATE, inventory, limit="prom-1", timeout=120)
    assert result.rc != 0, result.output[-3000:]
    assert "no host in group 'edge'" in result.failed["prom-1"]["msg"]
    assert "within --limit prom-1" in result.failed["prom-1"]["msg"]
    # The same inventory passes with its edge host in the run.
    result = ansible_playbook(VALIDATE, inventory, limit="edge-a", timeout=120)
    assert result.rc == 0, result.failed or result.output[-3000:]
