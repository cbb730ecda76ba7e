"""The CLI changes inventory variables the way a person would: only the
values, with every comment, quote and one-line list entry where it was."""

from __future__ import annotations

import shutil

import pytest

from automata_lb import inventory as inv
from automata_lb.targets import LAB_INVENTORY

GROUP_VARS = "group_vars/edge/main.yml"


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(LAB_INVENTORY, tmp_path / "lab")
    return tmp_path / "lab"


def test_a_change_and_its_undo_give_back_the_file_byte_for_byte(copy):
    original = (copy / GROUP_VARS).read_text()
    backends = inv.read(copy, "edge_backends")
    overrides = inv.read(copy, "traffic_policy_overrides")
    inv.write(copy, {"edge_backends": [*backends, {"name": "backend-4", "address": "10.77.7.24", "port": 8000}],
                     "traffic_policy_overrides": {**overrides, "canary": {"share": 25}}})
    changed = (copy / GROUP_VARS).read_text()
    assert "  - {name: backend-4, address: 10.77.7.24, port: 8000}\n" in changed
    assert inv.read(copy, "traffic_policy_overrides")["canary"] == {"share": 25}
    # Every comment line of the original is still there.
    assert [line for line in original.splitlines() if line.startswith("#")] == \
        [line for line in changed.splitlines() if line.startswith("#")]
    inv.write(copy, {"edge_backends": backends, "traffic_policy_overrides": overrides})
    assert (copy / GROUP_VARS).read_text() == original


def test_the_variable_is_found_in_the_file_that_defines_it(copy):
    assert inv.var_file(copy, "edge_backends") == copy / GROUP_VARS
