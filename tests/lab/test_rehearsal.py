"""The lab's nodes through a production-shaped inventory (.lab/rehearsal,
made by `python -m lab up`): Ansible and the CLI log in as `deploy`, a user
who is not root, and become root through sudo; the stats and VRRP passwords
are in Ansible Vault; the CLI finds Prometheus through the inventory.

The playbook converges the nodes through it and finds nothing to change
(they run what the lab's own inventory gave them, and the secrets decrypt
to the same values); without the vault password it is refused before any
host is touched.  The CLI reads and changes the tier through it: status,
health-check, metrics, a canary weight moved and rolled back, its history
kept beside the inventory.
"""

from __future__ import annotations

import json

import pytest
from test_cli_status import cli

from automata_lb import targets
from lab import stack
from tests.kit import ansible_playbook

pytestmark = pytest.mark.usefixtures("trusted_gateway")

ROOT = targets.ROOT
REHEARSAL, VAULT_PASS = stack.REHEARSAL_DIR, stack.REHEARSAL_VAULT_PASS
THROUGH_IT = ("--inventory", str(REHEARSAL), "--vault-password-file", str(VAULT_PASS))


def _status() -> dict:
    proc = cli(*THROUGH_IT, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _weights(status: dict) -> set[int]:
    return {e[lb]["canary_percent"] for e in status["edges"] for lb in ("nginx", "haproxy")}


@pytest.fixture(scope="module")
def converged(lab):
    return ansible_playbook(ROOT / "playbooks" / "edge.yml", REHEARSAL, args=["--vault-password-file", str(VAULT_PASS)])


def test_the_nodes_are_reached_as_a_user_who_is_not_root(monkeypatch):
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(VAULT_PASS))
    for node in targets.inventory(REHEARSAL).edges:
        assert (node.user, node.become) == ("deploy", True)
        plain = targets.EdgeNode(node.name, node.address, node.user, node.port, node.key, node.ssh_args)
        assert plain.run("id", "-un").stdout.strip() == "deploy"
        assert node.run("id", "-un").stdout.strip() == "root"   # through sudo, as Ansible's become
        assert node.run("true | id -un").stdout.strip() == "root"  # a whole pipeline, not its first command


def test_the_playbook_converges_through_it_and_finds_nothing_to_change(converged):
    assert converged.rc == 0, converged.output[-3000:]
    assert set(converged.changed.values()) == {0}, converged.changed_tasks


def test_without_the_vault_password_nothing_runs():
    run = ansible_playbook(ROOT / "playbooks" / "edge.yml", REHEARSAL, env={"ANSIBLE_VAULT_PASSWORD_FILE": ""})
    assert run.rc != 0
    assert "vault" in run.output.lower(), run.output[-2000:]
    assert not any(s.get("changed") for s in run.stats.values())


def test_status_health_check_and_metrics_read_the_tier_through_it(converged):
    status = _status()
    assert {e["node"] for e in status["edges"]} == {"edge-1", "edge-2"}
    assert all(e["reachable"] and e["nginx"]["active"] and e["haproxy"]["active"] for e in status["edges"]), status
    assert status["prometheus"] == "http://127.0.0.1:9090"
    assert {s["state"] for s in status["servers"]} == {"UP"}
    health = cli(*THROUGH_IT, "health-check")
    assert health.returncode == 0, health.stdout + health.stderr
    metrics = cli(*THROUGH_IT, "metrics", "--json")   # from the Prometheus the inventory names
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr


def test_a_canary_weight_moves_through_it_and_rolls_back(converged):
    before = _weights(_status())
    assert len(before) == 1
    (share,) = before
    moved = cli(*THROUGH_IT, "canary-deploy", "canary", "--weight", str(share + 10), "--yes")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert _weights(_status()) == {share + 10}
    back = cli(*THROUGH_IT, "rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _weights(_status()) == {share}
    # Kept beside the inventory, for every operator of it.
    history = (REHEARSAL / ".automata-lb" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["command"] for line in history][-2:] == ["canary-deploy", "rollback"]
