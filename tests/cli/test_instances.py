"""Instances on an inventory's VMs: scale-up/down, rolling-update and the
canary's releases start and stop instances through the playbook the
inventory names (automata_lb_instance_playbook), taking new ones from its
spares.  Without that playbook, or past the last spare, the command is
refused naming the variable before anything changes; the playbook is run
for real here (on this machine) to hold it to its contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from automata_lb import backend_changes, cli, instances, targets

SEED = targets.ROOT / "inventories" / "lab"
HOOK = """\
- name: One backend instance, as a release process would start it
  hosts: localhost
  gather_facts: false
  vars:
    ansible_connection: local
  tasks:
    - name: Refuse what cannot start
      ansible.builtin.fail:
        msg: "no image for {{ automata_lb_instance.release }}"
      when: automata_lb_instance.release | default('') == 'v-missing'
    - name: Keep what was asked
      ansible.builtin.copy:
        content: "{{ automata_lb_instance | to_json }}"
        dest: "{{ playbook_dir }}/{{ automata_lb_instance.name }}.{{ automata_lb_instance.state }}.json"
        mode: "0644"
"""
SPARES = "automata_lb_instance_spares:\n  - {name: backend-4, address: 10.77.7.24, port: 8000}\n"


def _inventory(tmp_path: Path, extra: str = "") -> Path:
    copy = tmp_path / "inventory"
    shutil.copytree(SEED, copy)
    if extra:
        (copy / "group_vars" / "edge" / "instances.yml").write_text(extra)
    return copy


@pytest.fixture
def with_hook(tmp_path) -> Path:
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "instance.yml").write_text(HOOK)
    return _inventory(tmp_path, f"automata_lb_instance_playbook: ../hooks/instance.yml\n{SPARES}")


def _cli(inventory: Path, *args: str):
    return CliRunner().invoke(cli.app, ["--inventory", str(inventory), *args])


def _texts(inventory: Path) -> dict[str, str]:
    return {str(p.relative_to(inventory)): p.read_text() for p in sorted(inventory.rglob("*")) if p.is_file()}


def _refused(inventory: Path, *command: str) -> str:
    """What the CLI said refusing `command` (exit 2), having changed nothing."""
    before = _texts(inventory)
    result = _cli(inventory, *command, "--dry-run")
    assert result.exit_code == 2, result.output
    assert _texts(inventory) == before
    return result.output


@pytest.mark.parametrize("command", [["scale-up", "1"], ["scale-down", "1"], ["rolling-update", "v2"],
                                     ["canary-deploy", "v2", "--steps", "10,100"]])
def test_without_an_instance_playbook_changes_of_instances_are_refused_naming_it(tmp_path, command):
    assert instances.PLAYBOOK_VARIABLE in _refused(_inventory(tmp_path), *command)


def test_past_the_last_spare_scale_up_is_refused_naming_the_spares(with_hook):
    said = _refused(with_hook, "scale-up", "2")
    assert "3 stable instances run and 1 more can start; 5 asked" in said
    assert instances.SPARES_VARIABLE in said


def test_with_a_playbook_the_plan_names_the_spare_and_the_dry_run_changes_nothing(with_hook):
    before = _texts(with_hook)
    up = _cli(with_hook, "scale-up", "1", "--dry-run")
    assert up.exit_code == 0, up.output
    assert "+ start backend-4 (stable) and add it to both load balancers" in up.output
    canary = _cli(with_hook, "canary-deploy", "v2", "--steps", "10,100", "--dry-run")
    assert canary.exit_code == 0, canary.output
    assert "steps 10% -> 100%" in canary.output
    assert _texts(with_hook) == before


@pytest.mark.parametrize(("text", "named"), [
    ("automata_lb_instance_playbook: '{{ playbook_dir }}/x.yml'\n", "must be a plain path"),
    ("automata_lb_instance_spares: [{name: backend-4, address: 10.77.7.24}]\n", "item 0"),
    ("automata_lb_instance_spares: [{name: backend-4, address: 10.77.7.24, port: http}]\n", "not a TCP port"),
])
def test_a_malformed_instance_setting_is_refused_naming_it(tmp_path, text, named):
    inventory = _inventory(tmp_path, text)
    result = _cli(inventory, "scale-up", "1", "--dry-run")
    assert result.exit_code == 3, result.output
    assert text.split(":")[0] in result.output and named in result.output


def test_the_playbook_gets_the_instance_and_the_release_is_kept_beside_the_inventory(with_hook):
    target = targets.inventory(with_hook)
    fleet = instances.of(target)
    spare = fleet.spares()[0]
    fleet.start(spare, "stable", "v2")
    asked = json.loads((with_hook.parent / "hooks" / "backend-4.started.json").read_text())
    assert asked == {"name": "backend-4", "address": "10.77.7.24", "port": 8000, "track": "stable",
                     "release": "v2", "state": "started"}
    assert fleet.releases() == {"backend-4": "v2"}
    assert json.loads((with_hook / ".automata-lb" / "releases.json").read_text()) == {"backend-4": "v2"}
    fleet.stop(spare)
    assert json.loads((with_hook.parent / "hooks" / "backend-4.stopped.json").read_text())["state"] == "stopped"
    assert fleet.releases() == {}


def test_a_playbook_that_fails_stops_the_change_naming_its_task(with_hook):
    fleet = instances.of(targets.inventory(with_hook))
    with pytest.raises(targets.TargetError, match="Refuse what cannot start: no image for v-missing"):
        fleet.start(fleet.spares()[0], "stable", "v-missing")
    assert fleet.releases() == {}


def test_scaling_takes_spares_in_order_and_gives_back_the_last_first():
    spares = [{"name": f"backend-{n}"} for n in (4, 5, 6)]
    state = backend_changes.BackendState([{"name": "web-a"}, {"name": "web-b"}], [], {}, 10)
    up = backend_changes.with_stable_count(state, 4, spares)
    assert [b["name"] for b in up.backends] == ["web-a", "web-b", "backend-4", "backend-5"]
    down = backend_changes.with_stable_count(up, 3, spares)
    assert [b["name"] for b in down.backends] == ["web-a", "web-b", "backend-4"]
    assert [b["name"] for b in backend_changes.with_stable_count(down, 1, spares).backends] == ["web-a"]
