"""Bad input given to the lab's inventory is refused by the validation play
of playbooks/edge.yml, naming the variable, before any host is touched.

Offline: the lab inventory's own variables (throwaway TLS files and
secrets made here) plus one bad value per case, each case a host of its
own with a local connection.  One ansible-playbook run checks every case:
the play is playbooks/validate.yml's own, read from the file, without
any_errors_fatal so that one refused case does not hide the others.  The
playbook itself (any_errors_fatal, then the plays that change hosts) is run
as a whole for the case where one host of two is wrong: neither goes on.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest
import trustme
import yaml

from tests.kit import ansible_playbook
from traffic import model

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "playbooks" / "validate.yml"
LAB_VARS = ROOT / "inventories" / "lab" / "group_vars" / "edge" / "main.yml"
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}


def lab_vars() -> dict:
    """The lab inventory's edge variables, as written (templated by Ansible)."""
    return yaml.safe_load(LAB_VARS.read_text())


def _policy_with(change: dict) -> dict:
    return model.deep_merge(lab_vars().get("traffic_policy_overrides") or {}, change)


def _weak_ciphers() -> list[str]:
    return [*model.load(overrides=lab_vars().get("traffic_policy_overrides")).tls.ciphers, "AES128-SHA"]


# case: (variables over the lab's, words the refusal must hold).  The cases
# the lab suites used to converge, each stopped by the first play.
BAD = {
    "nofile_not_a_number": ({"kernel_tuning_nofile": "plenty"}, ["kernel_tuning_nofile"]),
    "nofile_too_small": ({"kernel_tuning_nofile": 100}, ["kernel_tuning_nofile"]),
    "apply_global_not_a_boolean": ({"kernel_tuning_apply_global": "maybe"}, ["kernel_tuning_apply_global"]),
    "worker_connections_not_a_number": ({"nginx_lb_worker_connections": "many"}, ["nginx_lb_worker_connections"]),
    "deny_cidr_malformed": ({"nginx_lb_deny_cidrs": ["192.0.2.0/33"]}, ["nginx_lb_deny_cidrs", "192.0.2.0/33"]),
    "certificate_missing": ({"nginx_lb_tls_certificate": "/nonexistent/server.pem"},
                            ["nginx_lb_tls_certificate", "no file at /nonexistent/server.pem"]),
    "stats_password_empty": ({"haproxy_lb_stats_password": ""}, ["haproxy_lb_stats_password"]),
    "canary_share_above_100": ({"traffic_policy_overrides": {"canary": {"share": 150}}}, ["canary.share"]),
    "check_fall_not_a_number": ({"haproxy_lb_check_fall": "three"}, ["haproxy_lb_check_fall"]),
    "check_downinter_not_a_time": ({"haproxy_lb_check_downinter": "soon"},
                                   ["haproxy_lb_check_downinter: 'soon' is not an HAProxy time"]),
    "health_class_unknown": ({"haproxy_lb_health_class": "nowhere"}, ["haproxy_lb_health_class (nowhere) must be a class"]),
    "maxconn_above_the_descriptors": ({"haproxy_lb_maxconn": 15000}, ["haproxy_lb_maxconn"]),
    # One case per check the roles fold into a single task: a slip in one
    # condition would let its bad value through.
    "nginx_health_class_unknown": ({"nginx_lb_health_class": "nowhere"},
                                   ["nginx_lb_health_class (nowhere) must be a class of the traffic policy"]),
    "nginx_drained_server_unknown": ({"nginx_lb_drained_servers": ["ghost"]},
                                     ["nginx_lb_drained_servers names unknown servers (ghost)"]),
    "nginx_proxy_buffers_malformed": ({"nginx_lb_proxy_buffers": "8x4k"},
                                      ["nginx_lb_proxy_buffers: '8x4k' is not an NGINX 'number size'"]),
    "nginx_rate_period_malformed": ({"nginx_lb_client_connection_rate_period": "10"},
                                    ["nginx_lb_client_connection_rate_period ('10')"]),
    "haproxy_monitor_uri_relative": ({"haproxy_lb_monitor_uri": "lb-health"},
                                     ["haproxy_lb_monitor_uri: 'lb-health' must be a path starting with /"]),
    "haproxy_client_table_size_malformed": ({"haproxy_lb_client_table_size": "lots"},
                                            ["haproxy_lb_client_table_size is a number"]),
    "haproxy_stats_user_with_a_colon": ({"haproxy_lb_stats_user": "ad:min"}, ["haproxy_lb_stats_user"]),
    "haproxy_stats_password_with_a_newline": ({"haproxy_lb_stats_password": "long enough\nto pass"},
                                              ["haproxy_lb_stats_password"]),
    "exporters_on_every_address": ({"edge_exporters_listen_address": "0.0.0.0"},
                                   ["edge_exporters_listen_address='0.0.0.0' must be one IPv4 address"]),
    "exporters_ports_clash": ({"edge_exporters_node_port": 9113, "edge_exporters_nginx_port": 9113},
                              ["edge_exporters_mtail_port", "must be distinct ports"]),
    "exporters_without_textfile": ({"edge_exporters_node_collectors": ["cpu"]}, ["include 'textfile'"]),
    "vip_bound_service_with_suffix": ({"edge_vip_bound_services": ["nginx.service"]},
                                      ["edge_vip_bound_services must list systemd unit names without '.service'"]),
    "vip_check_user_malformed": ({"edge_vip_check_user": "Root User"}, ["edge_vip_check_user/edge_vip_check_group"]),
    "policy_negative_burst": ({"traffic_policy_overrides": _policy_with({"classes": {"api": {"rate": {"burst": -1}}}})},
                              ["classes.api.rate.burst: must be >= 0, got -1"]),
    "policy_weak_cipher": ({"traffic_policy_overrides": _policy_with({"tls": {"ciphers": _weak_ciphers()}})},
                           [f"tls.ciphers[{len(_weak_ciphers()) - 1}]: 'AES128-SHA' is not in Mozilla's "
                            "intermediate profile"]),
}
# The lab's inventory as it is: it must pass, or the refusals above prove nothing.
GOOD = {"lab_inventory": ({}, [])}


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory) -> Path:
    """What `python -m lab up` generates and the lab inventory reads: a CA-signed
    certificate and key, the stats and VRRP passwords."""
    directory = tmp_path_factory.mktemp("lab")
    (directory / "pki").mkdir()
    leaf = trustme.CA().issue_cert("edge.automata.test")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "pki" / "server.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "pki" / "server.key"))
    (directory / "secrets").mkdir()
    (directory / "secrets" / "haproxy_stats_password").write_text(secrets.token_urlsafe(18))
    (directory / "secrets" / "vrrp_auth_pass").write_text(secrets.token_urlsafe(6))
    return directory


def validation_play(tmp: Path) -> Path:
    """playbooks/validate.yml's role checks as one play over every host, each
    host's failure its own (no any_errors_fatal)."""
    plays = yaml.safe_load(VALIDATE.read_text())
    (play,) = [p for p in plays if p["hosts"] == "edge"]
    play = {**play, "hosts": "all"}
    play.pop("any_errors_fatal", None)
    path = tmp / "validate-each-case.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory, lab_dir):
    """One run over every case; the run as data."""
    tmp = tmp_path_factory.mktemp("refusals")
    groups = {}
    for number, (name, (variables, _)) in enumerate((BAD | GOOD).items(), start=11):
        # A floating address of its own per case: the VRRP checks compare
        # the members of one group, and each case is a group of one.
        groups[name] = {"hosts": {name: {"ansible_host": f"10.77.7.{number}"}},
                        "vars": {**lab_vars(), "edge_vip_group": name, **variables}}
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {**LOCAL, "lab_dir": str(lab_dir)}, "children": groups}}))
    result = ansible_playbook(validation_play(tmp), inventory, timeout=600)
    assert set(result.stats) == set(BAD | GOOD), result.output[-3000:]
    return result


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_the_variable(cases, case):
    failure = cases.failed.get(case)
    assert failure, f"{case}: nothing refused it"
    for word in BAD[case][1]:
        assert word in failure["msg"], failure


def test_the_lab_inventory_itself_passes(cases):
    assert not cases.failed.get("lab_inventory"), cases.failed["lab_inventory"]


def test_a_bad_variable_on_one_host_stops_every_host_before_any_change(tmp_path, lab_dir):
    # On edge-1 the override is valid and would change somaxconn; on edge-2
    # it is malformed.  The whole playbook runs: its first play must stop
    # both hosts, so neither reaches the plays that change a host (here a
    # stand-in play that would report a change).
    override = ("{{ {'net.core.somaxconn': 'lots'} if inventory_hostname == 'edge-2' "
                "else {'net.core.somaxconn': 1024} }}")
    playbook = tmp_path / "edge.yml"
    playbook.write_text(yaml.safe_dump([
        {"name": "Validate the inventory", "ansible.builtin.import_playbook": str(VALIDATE)},
        {"name": "Change the hosts", "hosts": "edge", "gather_facts": False,
         "tasks": [{"name": "Change something", "ansible.builtin.debug": {"msg": "changed"}, "changed_when": True}]},
    ], sort_keys=False))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {**LOCAL, "lab_dir": str(lab_dir)}, "children": {"edge": {
        "hosts": {"edge-1": {"ansible_host": "10.77.7.11"}, "edge-2": {"ansible_host": "10.77.7.12"}},
        "vars": {**lab_vars(), "kernel_tuning_sysctl_overrides": override}}}}}))
    result = ansible_playbook(playbook, inventory, timeout=300)
    assert result.rc != 0
    assert list(result.failed) == ["edge-2"], result.failed
    message = result.failed["edge-2"]["msg"]
    assert "net.core.somaxconn" in message and "kernel_tuning_sysctl_overrides" in message, message
    assert result.changed_tasks == {}, result.changed_tasks
