"""The CLI changes inventory variables the way a person would: only the
values, with every comment, quote and one-line list entry where it was."""

from __future__ import annotations

import shutil

import pytest

from automata_lb import inventory as inv
from automata_lb.targets import ROOT

GROUP_VARS = "group_vars/edge/main.yml"
LAB_SEED = ROOT / "inventories" / "lab"
PROD_INVENTORY = ROOT / "inventories" / "prod"


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(LAB_SEED, tmp_path / "lab")
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


def test_a_share_added_changed_and_taken_away_leaves_every_comment_in_place(copy):
    # What scaling and a canary did to the lab's file: the comment that
    # introduces the next block travelled with the share and vanished when
    # the share was taken away.
    original = (copy / GROUP_VARS).read_text()
    overrides, backends = inv.read(copy, "traffic_policy_overrides"), inv.read(copy, "edge_backends")
    steps = [{"edge_backends": [*backends, {"name": "backend-4", "address": "10.77.7.24", "port": 8000}]},
             {"traffic_policy_overrides": {**overrides, "canary": {"share": 10}}},
             {"traffic_policy_overrides": {**overrides, "canary": {"share": 0}}},
             {"edge_backends": backends},
             {"traffic_policy_overrides": overrides}]
    for step in steps:
        inv.write(copy, step)
        text = (copy / GROUP_VARS).read_text()
        # The share stays inside its own block: above the comment that introduces the next one.
        if "share:" in text:
            assert text.index("share:") < text.index("# Throwaway TLS material"), text
    assert (copy / GROUP_VARS).read_text() == original


def test_a_value_never_lands_under_the_example_that_follows_it(tmp_path):
    # The production inventory documents each setting with a commented
    # example right below it: a new value replaces the setting's own line.
    shutil.copytree(PROD_INVENTORY, tmp_path / "prod")
    path = tmp_path / "prod" / GROUP_VARS
    original = path.read_text()
    inv.write(tmp_path / "prod", {"traffic_policy_overrides": {"canary": {"share": 20}}})
    changed = path.read_text()
    start = changed.index("traffic_policy_overrides:\n")
    assert changed[start:].startswith("traffic_policy_overrides:\n  canary:\n    share: 20\n# traffic_policy_overrides:")
    assert changed.replace("traffic_policy_overrides:\n  canary:\n    share: 20\n", "traffic_policy_overrides: {}\n") == original


def test_a_comment_indented_at_the_end_of_a_value_stays_with_it(tmp_path):
    group_vars = tmp_path / "inv" / GROUP_VARS
    group_vars.parent.mkdir(parents=True)
    original = ("edge_backends:\n"
                "  - {name: api-1, address: 10.0.1.21, port: 8000}\n"
                "  # api-2 joins after the spring migration\n"
                "\n"
                "# The canary track.\n"
                "edge_canary_backends: []\n")
    group_vars.write_text(original)
    two = [{"name": "api-1", "address": "10.0.1.21", "port": 8000}, {"name": "api-2", "address": "10.0.1.22", "port": 8000}]
    inv.write(tmp_path / "inv", {"edge_backends": two})
    assert group_vars.read_text() == original.replace(
        "  # api-2", "  - {name: api-2, address: 10.0.1.22, port: 8000}\n  # api-2")
    inv.write(tmp_path / "inv", {"edge_backends": two[:1]})
    assert group_vars.read_text() == original
