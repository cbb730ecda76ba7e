"""The edge_vip validation refuses every bad input before anything changes,
and its message names the host and the variable.

Most cases run in one ansible-playbook run (validate_role.yml): each case is
an inventory group of two hosts of its own, so one run checks them all (a
run of the whole validation play takes ~10 s).  Then the validation play
itself (playbooks/validate.yml, which playbooks/edge.yml imports first): it
stops every host on a bad value with nothing changed, and leaves hosts
without addresses alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vipkit import BASE_VARS, HOSTS, VALIDATE, VIP, run, vip_vars, write_inventory

VALIDATE_ROLE = Path(__file__).with_name("validate_role.yml")

# case: (group variables over vip_vars(), {"a"|"b": host variables}, the variable the message must name)
BAD = {
    "router_id_zero": ({"edge_vip_virtual_router_id": 0}, {}, "edge_vip_virtual_router_id"),
    "router_id_256": ({"edge_vip_virtual_router_id": 256}, {}, "edge_vip_virtual_router_id"),
    "router_id_not_a_number": ({"edge_vip_virtual_router_id": "fifty"}, {}, "edge_vip_virtual_router_id"),
    "address_without_prefix": ({"edge_vip_addresses": ["10.78.9.100"]}, {}, "edge_vip_addresses"),
    "address_out_of_range": ({"edge_vip_addresses": ["10.78.9.300/24"]}, {}, "edge_vip_addresses"),
    "address_is_the_network": ({"edge_vip_addresses": ["10.78.9.0/24"]}, {}, "edge_vip_addresses"),
    "address_twice": ({"edge_vip_addresses": [VIP, VIP]}, {}, "edge_vip_addresses"),
    "address_ipv6": ({"edge_vip_addresses": ["2001:db8::100/64"]}, {}, "edge_vip_addresses"),
    "auth_missing": ({"edge_vip_auth_pass": ""}, {}, "edge_vip_auth_pass"),
    "auth_longer_than_8": ({"edge_vip_auth_pass": "Zq8rT2mW9k"}, {}, "edge_vip_auth_pass"),
    "auth_shorter_than_8": ({"edge_vip_auth_pass": "Zq8rT2"}, {}, "edge_vip_auth_pass"),
    "auth_well_known": ({"edge_vip_auth_pass": "12345678"}, {}, "edge_vip_auth_pass"),
    "auth_comment_character": ({"edge_vip_auth_pass": "Zq8r#2mW"}, {}, "edge_vip_auth_pass"),
    "advert_int_zero": ({"edge_vip_advert_int": 0}, {}, "edge_vip_advert_int"),
    "advert_int_256": ({"edge_vip_advert_int": 256}, {}, "edge_vip_advert_int"),
    "preempt_delay_1001": ({"edge_vip_preempt": True, "edge_vip_preempt_delay": 1001}, {}, "edge_vip_preempt_delay"),
    "check_interval_zero": ({"edge_vip_check_interval": 0}, {}, "edge_vip_check_interval"),
    "check_interval_61": ({"edge_vip_check_interval": 61}, {}, "edge_vip_check_interval"),
    "check_fall_zero": ({"edge_vip_check_fall": 0}, {}, "edge_vip_check_fall"),
    "check_timeout_zero": ({"edge_vip_check_timeout": 0}, {}, "edge_vip_check_timeout"),
    "duplicate_priorities": ({}, {"a": {"edge_vip_priority": 150}, "b": {"edge_vip_priority": 150}},
                             "edge_vip_priority"),
    "priority_255": ({}, {"a": {"edge_vip_priority": 255}}, "edge_vip_priority"),
    "group_without_the_host": ({"edge_vip_group": "edge"}, {}, "edge_vip_group"),
    "peer_address_is_a_name": ({}, {"b": {"edge_vip_unicast_address": "edge-b.example.net"}},
                               "edge_vip_unicast_address"),
    "peer_address_is_the_vip": ({}, {"b": {"edge_vip_unicast_address": VIP.split("/")[0]}},
                                "edge_vip_unicast_address"),
    "hosts_disagree_on_router_id": ({}, {"b": {"edge_vip_virtual_router_id": 52}}, "edge_vip_virtual_router_id"),
    "interface_name_too_long": ({"edge_vip_interface": "a-very-long-interface0"}, {}, "edge_vip_interface"),
    "health_check_not_http": ({"edge_vip_health_checks": [{"name": "nginx", "url": "ftp://127.0.0.1/health"}]}, {},
                              "edge_vip_health_checks"),
    "health_check_url_with_a_quote": ({"edge_vip_health_checks": [{"name": "nginx", "url": "http://127.0.0.1/it's"}]},
                                      {}, "edge_vip_health_checks"),
    "health_check_url_with_a_backslash": ({"edge_vip_health_checks": [{"name": "nginx", "url": "http://127.0.0.1/a\\b"}]},
                                          {}, "edge_vip_health_checks"),
    "haproxy_has_no_plain_listener": ({"haproxy_lb_binds": [{"address": "*", "port": 9443, "tls": True}]}, {},
                                      "haproxy_lb_binds"),
    "listener_on_the_vip_without_nonlocal_bind": ({"nginx_lb_listen_address": VIP.split("/")[0]}, {},
                                                  "kernel_tuning_sysctl_overrides"),
}
GOOD = {
    "defaults": ({}, {}),
    "preempt_with_delay": ({"edge_vip_preempt": True, "edge_vip_preempt_delay": 30}, {}),
    "multicast": ({"edge_vip_unicast": False}, {}),
    "chosen_priorities": ({}, {"a": {"edge_vip_priority": 100}, "b": {"edge_vip_priority": 101}}),
    "listener_on_the_vip_with_nonlocal_bind": ({"nginx_lb_listen_address": VIP.split("/")[0],
                                                "kernel_tuning_sysctl_overrides": {"net.ipv4.ip_nonlocal_bind": 1}},
                                               {}),
    # As an operator types it on the command line: typed as kernel_tuning declares it.
    "listener_on_the_vip_with_nonlocal_bind_as_text": ({"nginx_lb_listen_address": VIP.split("/")[0],
                                                        "kernel_tuning_sysctl_overrides": "net.ipv4.ip_nonlocal_bind=1"},
                                                       {}),
}


@pytest.fixture(scope="module")
def case_groups() -> dict:
    """Every case as an inventory group of two hosts of its own."""
    groups = {}
    for name, (group_vars, host_vars, *_) in (BAD | GOOD).items():
        hosts = {f"{name}-{side}": {"ansible_host": address} | host_vars.get(side, {})
                 for side, address in zip("ab", HOSTS.values(), strict=True)}
        groups[name] = {"hosts": hosts, "vars": vip_vars(edge_vip_group=name) | group_vars}
    return groups


@pytest.fixture(scope="module")
def cases(tmp_path_factory, case_groups):
    """One run of validate_role.yml over every case, at -v; the run as data."""
    inventory = tmp_path_factory.mktemp("cases") / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": BASE_VARS, "children": case_groups}}, sort_keys=False))
    result = run(VALIDATE_ROLE, inventory, verbose=True)
    assert set(result.stats) == {f"{name}-{side}" for name in BAD | GOOD for side in "ab"}, result.output[-3000:]
    return result


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_is_refused_naming_the_variable(cases, case):
    *_, variable = BAD[case]
    failures = [cases.failed.get(f"{case}-{side}") for side in "ab"]
    failed = [f for f in failures if f]
    assert failed, f"{case}: nothing refused it"
    for side, failure in zip("ab", failures, strict=True):
        if failure:
            assert variable in failure["msg"], failure
            # The first line names the host (argument-spec messages name the role's entry point instead).
            assert f"{case}-{side}" in failure["msg"] or "Validation of arguments failed" in failure["msg"], failure


@pytest.mark.parametrize("case", sorted(GOOD))
def test_good_values_pass(cases, case):
    assert not any(cases.failed.get(f"{case}-{side}") for side in "ab"), cases.failed


def test_validation_changes_nothing(cases):
    assert cases.changed == 0, cases.changed_tasks


def test_password_never_appears_in_the_output(cases, case_groups):
    # -v prints every fact set_fact sets: the typed view is there, without
    # the password (no_log in meta/argument_specs.yml keeps it out).
    assert '"_edge_vip_vars": {' in cases.output
    # The generated ones: "12345678" may well appear for other reasons.
    passwords = [group["vars"]["edge_vip_auth_pass"] for name, group in case_groups.items()
                 if "edge_vip_auth_pass" not in (BAD | GOOD)[name][0]]
    assert len(passwords) > 20
    assert [p for p in passwords if p in cases.output] == []


def test_the_edge_playbook_stops_every_host_before_any_change(tmp_path):
    # edge-b alone is wrong (a priority it shares with edge-a); the
    # validation play refuses the inventory for both hosts, and
    # nothing has run that could change them.
    inventory = write_inventory(tmp_path, vip_vars(), {"edge-b": {"edge_vip_priority": 200}})
    result = run(VALIDATE, inventory)
    assert result.rc != 0
    assert set(result.failed) == {"edge-a", "edge-b"}, result.failed
    assert all("edge_vip_priority" in f["msg"] for f in result.failed.values()), result.failed
    assert result.changed == 0, result.changed_tasks


def test_the_edge_playbook_leaves_hosts_without_addresses_alone(tmp_path):
    # No address in the inventory: edge_vip's variables are not even looked
    # at (a router id of 999 would be refused), the other roles' are.
    inventory = write_inventory(tmp_path, {"edge_vip_virtual_router_id": 999})
    result = run(VALIDATE, inventory)
    assert result.rc == 0, result.failed or result.output[-3000:]
    assert set(result.stats) == set(HOSTS) and result.changed == 0
