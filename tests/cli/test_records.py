"""The CLI's records (change history, progressive rollout) live with their
target: an inventory's beside it, so a second operator, or a second
checkout, reads and rolls back the same changes; the lab's under .lab/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automata_lb import canary, history, targets

SEED = targets.ROOT / "inventories" / "lab"


@pytest.fixture
def shared(tmp_path) -> Path:
    """An inventory folder two operators use, each from a checkout of their own."""
    inventory = tmp_path / "ops-repo" / "inventories" / "prod"
    shutil.copytree(SEED, inventory)
    return inventory


def test_a_change_recorded_through_one_path_is_read_through_any_other(shared, tmp_path, monkeypatch):
    history.record(str(shared), "scale-up", {"replicas": 3}, {"replicas": 4}, outcome="done")
    # The other operator names the same inventory relatively, from elsewhere, by its hosts file.
    monkeypatch.chdir(tmp_path / "ops-repo")
    for spelling in ("inventories/prod", "inventories/prod/", "inventories/prod/hosts.yml"):
        entry = history.last_change(spelling)
        assert entry is not None and entry["after"] == {"replicas": 4}, spelling
    assert (shared / ".automata-lb" / "history.jsonl").is_file()


def test_a_rollout_on_an_inventory_is_seen_and_locked_by_every_operator(shared):
    canary.save(canary.Rollout(str(shared), "v2", [10, 50], 30.0, {}, {}, phase="stepping"))
    assert canary.load(str(shared / "hosts.yml")).release == "v2"
    with canary.lock(str(shared)), pytest.raises(canary.Busy), canary.lock(str(shared / "hosts.yml")):
        pass


def test_ansible_reads_nothing_of_the_records_as_inventory(shared):
    history.record(str(shared), "canary-deploy", {"canary_share": 10}, {"canary_share": 20}, outcome="done")
    canary.save(canary.Rollout(str(shared), "v2", [10, 50], 30.0, {}, {}, phase="stepping"))
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    listed = subprocess.run([str(ansible_inventory), "-i", str(shared), "--list"], capture_output=True, text=True,
                            env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_WARNING": "True"}, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert ".automata-lb" not in listed.stderr, listed.stderr
    assert set(json.loads(listed.stdout)["edge"]["hosts"]) == {"edge-1", "edge-2"}


def test_the_labs_records_go_with_the_lab():
    assert targets.record_file("lab", "history", "jsonl").is_relative_to(targets.ROOT / ".lab")
    assert targets.record_file("lab", "rollout", "json").is_relative_to(targets.ROOT / ".lab")
