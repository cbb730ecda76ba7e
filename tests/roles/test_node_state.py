"""rolekit/node_state.py against what Ansible's own modules report on this
machine: a role skips its writes only where the node already holds exactly
what it would write (content, mode, owner), and finds the files it would
remove."""

from __future__ import annotations

import getpass
import grp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rolekit import node_state
from tests.kit import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
USER, GROUP = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name


def _find(tmp_path: Path, directory: Path, patterns: list[str]) -> dict:
    """ansible.builtin.find's result for `directory`, as a role registers it."""
    out = tmp_path / "found.json"
    playbook = tmp_path / "find.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.find": {"paths": [str(directory)], "patterns": patterns, "get_checksum": True},
         "register": "found"},
        {"ansible.builtin.copy": {"content": "{{ found | to_json }}", "dest": str(out), "mode": "0600"}}]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    run = ansible_playbook(playbook, inventory, timeout=120)
    assert run.rc == 0, run.output[-2000:]
    return json.loads(out.read_text())


@pytest.fixture
def node(tmp_path):
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "app.conf").write_text("listen 80;\n")
    (directory / "app.conf").chmod(0o644)
    (directory / "rates.1111.map").write_text("/api 10\n")
    (directory / "rates.1111.map").chmod(0o644)
    return directory


def _planned(directory: Path, conf: str = "listen 80;\n", mode: str = "0644") -> list[dict]:
    return (node_state.planned([f"{directory}/app.conf"], [conf], mode, USER, GROUP)
            + node_state.planned([f"{directory}/rates.1111.map"], ["/api 10\n"], "0644", USER, GROUP))


def test_a_node_that_holds_what_the_role_renders_needs_no_write(tmp_path, node):
    found = _find(tmp_path, node, ["app.conf", "rates.*.map"])
    assert node_state.files_to_write(_planned(node), found, {str(node): "rates.*.map"}) == []


def test_other_content_another_mode_or_owner_or_a_missing_file_is_written(tmp_path, node):
    found = _find(tmp_path, node, ["app.conf", "rates.*.map"])
    conf = f"{node}/app.conf"
    assert node_state.files_to_write(_planned(node, conf="listen 8080;\n"), found) == [conf]
    assert node_state.files_to_write(_planned(node, mode="0600"), found) == [conf]
    other_owner = [dict(f, owner="nobody-else") if f["path"] == conf else f for f in _planned(node)]
    assert node_state.files_to_write(other_owner, found) == [conf]
    (node / "app.conf").unlink()
    assert node_state.files_to_write(_planned(node), _find(tmp_path, node, ["app.conf", "rates.*.map"])) == [conf]


def test_a_file_the_role_no_longer_names_is_reported_for_removal(tmp_path, node):
    (node / "rates.2222.map").write_text("/api 20\n")
    found = _find(tmp_path, node, ["app.conf", "rates.*.map"])
    assert node_state.files_to_write(_planned(node), found, {str(node): "rates.*.map"}) == [f"{node}/rates.2222.map"]


def test_the_state_command_reads_packages_here():
    # This machine has no systemd as PID 1: the systemctl half says so on
    # stderr, the dpkg half still answers.
    command = node_state.state_command(["bash", "no-such-package-here"], ["nginx"])
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30).stdout
    assert node_state.missing_packages(out.splitlines(), ["bash", "no-such-package-here"]) == ["no-such-package-here"]


def test_units_that_do_not_run_or_do_not_start_at_boot_are_started():
    show = ("Id=nginx.service\nActiveState=active\nUnitFileState=enabled\n\n"
            "Id=haproxy.service\nActiveState=active\nUnitFileState=disabled\n\n"
            "Id=mtail.service\nActiveState=failed\nUnitFileState=enabled\n\n"
            "Id=keepalived.service\nActiveState=inactive\nUnitFileState=\n")
    assert node_state.units_to_start("ii  nginx\n\n" + show, ["nginx", "haproxy", "mtail", "keepalived"]) == [
        "haproxy", "mtail", "keepalived"]
