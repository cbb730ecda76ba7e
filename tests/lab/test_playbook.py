"""playbooks/edge.yml as a whole: idempotence and validation before change."""

from __future__ import annotations

import pytest
import testinfra

from labkit import INVENTORY


def _somaxconn(name: str) -> str:
    node = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    return node.run("sysctl -n net.core.somaxconn").stdout.strip()


def test_second_converge_changes_nothing(converge):
    first = converge()  # whatever earlier tests left, this brings it back
    assert first.rc == 0, first.output[-3000:]
    second = converge()
    assert second.rc == 0, second.output[-3000:]
    assert second.changed and all(n == 0 for n in second.changed.values()), second.output[-3000:]


def test_bad_variable_on_one_host_stops_every_host_before_change(converge):
    # On edge-1 this override is valid and would change somaxconn; on edge-2
    # it is malformed.  The validation play must stop both before either is
    # touched, and the message must name the host and the variable.
    before = _somaxconn("edge-1")
    override = ("{{ {'net.core.somaxconn': 'lots'} if inventory_hostname == 'edge-2' "
                "else {'net.core.somaxconn': 1024} }}")
    result = converge({"kernel_tuning_sysctl_overrides": override})
    assert result.rc != 0
    assert "edge-2" in result.output and "net.core.somaxconn" in result.output
    assert "kernel_tuning_sysctl_overrides" in result.output
    assert all(n == 0 for n in result.changed.values()), result.output[-3000:]
    assert _somaxconn("edge-1") == before


@pytest.mark.parametrize("extra, variable", [
    ({"kernel_tuning_nofile": "plenty"}, "kernel_tuning_nofile"),
    ({"kernel_tuning_nofile": 100}, "kernel_tuning_nofile"),
    ({"kernel_tuning_apply_global": "maybe"}, "kernel_tuning_apply_global"),
])
def test_wrong_type_or_range_fails_naming_the_variable(converge, extra, variable):
    result = converge(extra)
    assert result.rc != 0
    assert variable in result.output
    assert all(n == 0 for n in result.changed.values()), result.output[-3000:]
