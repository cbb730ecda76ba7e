"""The validation that runs before any host changes cannot pass on nothing:
an inventory without edge hosts, a pool without servers and a stats or
metrics listener open to everyone are refused, each naming what is wrong.

The role cases run in one ansible-playbook run (validate_cases.yml): each
case is an inventory group with one host of its own and names the role it
checks.  Then the validation playbook itself (playbooks/validate.yml, which
playbooks/edge.yml imports first) on inventories without edge hosts, and
the production inventory's files folder, which Ansible must not read as
inventory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
import yaml

from tests.kit import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "playbooks" / "validate.yml"
EDGE = ROOT / "playbooks" / "edge.yml"
CASES = Path(__file__).with_name("validate_cases.yml")
PROD = ROOT / "inventories" / "prod"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"

SERVERS = [{"name": "backend-1", "address": "192.0.2.21", "port": 8000}]
BASE_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "nginx_lb_tls_enabled": False,
    "haproxy_lb_stats_password": "not-a-default-" + "x" * 8,
    "kernel_tuning_nofile": 20000,
}
UNSET = object()  # a case without edge_backends in its inventory at all

# case: (role, group variables over {edge_backends: SERVERS}, host variables, words the message must hold)
BAD = {
    "nginx_edge_backends_empty": ("nginx_lb", {"edge_backends": []}, {}, ["edge_backends is empty", "nginx_lb_servers"]),
    "nginx_edge_backends_unset": ("nginx_lb", {"edge_backends": UNSET}, {}, ["edge_backends is empty or not set"]),
    "nginx_servers_set_empty": ("nginx_lb", {"nginx_lb_servers": []}, {}, ["nginx_lb_servers is set to []"]),
    "haproxy_edge_backends_empty": ("haproxy_lb", {"edge_backends": []}, {},
                                    ["edge_backends is empty", "haproxy_lb_stable_servers"]),
    "haproxy_edge_backends_unset": ("haproxy_lb", {"edge_backends": UNSET}, {}, ["edge_backends is empty or not set"]),
    "haproxy_stable_servers_set_empty": ("haproxy_lb", {"haproxy_lb_stable_servers": []}, {},
                                         ["haproxy_lb_stable_servers is set to []"]),
    "stats_on_every_address": ("haproxy_lb", {"haproxy_lb_stats_bind_address": "*"}, {},
                               ["haproxy_lb_stats_bind_address", "every address"]),
    "stats_on_every_ipv4_address": ("haproxy_lb", {"haproxy_lb_stats_bind_address": "0.0.0.0"}, {},
                                    ["haproxy_lb_stats_bind_address", "every address"]),
    "stats_on_every_ipv6_address": ("haproxy_lb", {"haproxy_lb_stats_bind_address": "::"}, {},
                                    ["haproxy_lb_stats_bind_address", "every address"]),
    "stats_on_an_empty_address": ("haproxy_lb", {"haproxy_lb_stats_bind_address": ""}, {},
                                  ["haproxy_lb_stats_bind_address", "is empty"]),
    # The default, ansible_host, when the inventory reaches the node by name.
    "stats_on_a_host_name": ("haproxy_lb", {}, {"ansible_host": "edge-a.example.net"},
                             ["haproxy_lb_stats_bind_address", "'edge-a.example.net' is not an IP address"]),
    "stats_on_an_address_in_brackets": ("haproxy_lb", {"haproxy_lb_stats_bind_address": "[2001:db8::11]"}, {},
                                        ["haproxy_lb_stats_bind_address", "is not an IP address"]),
    "metrics_open_to_nobody": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": []}, {},
                               ["haproxy_lb_metrics_allow_cidrs", "is empty"]),
    "metrics_open_to_everyone": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": ["10.0.0.0/8", "0.0.0.0/0"]}, {},
                                 ["haproxy_lb_metrics_allow_cidrs", "has 0.0.0.0/0: not"]),
    "metrics_open_to_every_ipv6_address": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": ["::/0"]}, {},
                                           ["haproxy_lb_metrics_allow_cidrs", "has ::/0"]),
    "metrics_network_with_host_bits": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": ["10.0.0.1/8"]}, {},
                                       ["haproxy_lb_metrics_allow_cidrs", "has 10.0.0.1/8"]),
    "metrics_network_is_a_name": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": ["monitoring"]}, {},
                                  ["haproxy_lb_metrics_allow_cidrs", "has monitoring"]),
}
GOOD = {
    "nginx_defaults": ("nginx_lb", {}, {}),
    "haproxy_defaults": ("haproxy_lb", {}, {}),
    "haproxy_stats_on_an_ipv6_host": ("haproxy_lb", {}, {"ansible_host": "2001:db8::11"}),
    "haproxy_stats_on_loopback": ("haproxy_lb", {"haproxy_lb_stats_bind_address": "127.0.0.1"}, {}),
    "haproxy_metrics_for_two_servers": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": ["192.0.2.5/32", "2001:db8::/64"]},
                                        {}),
    # As an operator types it on the command line: typed as the role declares it.
    "haproxy_metrics_as_text": ("haproxy_lb", {"haproxy_lb_metrics_allow_cidrs": "192.0.2.5/32, 198.51.100.0/24"}, {}),
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """One run of validate_cases.yml over every case; the run as data."""
    groups = {}
    for number, (name, (role, group_vars, host_vars, *_)) in enumerate((BAD | GOOD).items(), start=11):
        variables = {"case_role": role, "edge_backends": SERVERS} | group_vars
        groups[name] = {"hosts": {name: {"ansible_host": f"192.0.2.{number}"} | host_vars},
                        "vars": {k: v for k, v in variables.items() if v is not UNSET}}
    inventory = tmp_path_factory.mktemp("cases") / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": BASE_VARS, "children": groups}}, sort_keys=False))
    result = ansible_playbook(CASES, inventory, env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")}, timeout=300)
    assert set(result.stats) == set(BAD | GOOD), result.output[-3000:]
    return result


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_is_refused_naming_the_variable(cases, case):
    *_, words = BAD[case]
    failure = cases.failed.get(case)
    assert failure, f"{case}: nothing refused it"
    assert "\n" not in failure["msg"], failure
    assert failure["task"].startswith(BAD[case][0]), failure
    for word in words:
        assert word in failure["msg"], failure
    assert failure["msg"].startswith(f"{case}: "), failure


@pytest.mark.parametrize("case", sorted(GOOD))
def test_good_values_pass(cases, case):
    assert case not in cases.failed, cases.failed[case]


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


# --- The production inventory's files ------------------------------------------

def _documented_file(inventory_dir: Path, variable: str) -> Path:
    """Where inventories/prod's group_vars tell the operator to put a file
    (a commented example), for an inventory copied to `inventory_dir`."""
    text = (inventory_dir / "group_vars" / "edge" / "main.yml").read_text()
    (path,) = re.findall(rf'^# {variable}: "{{{{ inventory_dir }}}}([^"]+)"$', text, re.M)
    return Path(f"{inventory_dir}{path}").resolve()


def _list(inventory_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(inventory_dir), "--list", "-vvv"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def prod_copy(tmp_path) -> Path:
    """inventories/prod and its files folder as shipped, in a scratch copy."""
    shutil.copytree(PROD, tmp_path / "inventories" / "prod")
    if (PROD.parent / "prod-files").exists():
        shutil.copytree(PROD.parent / "prod-files", tmp_path / "inventories" / "prod-files")
    return tmp_path / "inventories" / "prod"


def _vaulted_key() -> str:
    # What `ansible-vault encrypt` leaves (the content is never decrypted here).
    return "$ANSIBLE_VAULT;1.1;AES256\n" + "6162636465666768" * 4 + "\n"


def test_files_where_the_production_inventory_says_are_not_read_as_inventory(prod_copy):
    key = _documented_file(prod_copy, "nginx_lb_tls_key")
    certificate = _documented_file(prod_copy, "nginx_lb_tls_certificate")
    assert not key.is_relative_to(prod_copy), key
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(_vaulted_key())
    certificate.write_text(trustme.CA().issue_cert("edge.example.net").cert_chain_pems[0].bytes().decode())
    listed = _list(prod_copy)
    assert listed.returncode == 0, listed.stderr
    assert "WARNING" not in listed.stderr, listed.stderr
    # Not even tried: the only source parsed is hosts.yml.
    assert key.name not in listed.stdout + listed.stderr and certificate.name not in listed.stdout + listed.stderr
    parsed = re.findall(r"^Parsed (\S+) inventory source", listed.stdout + listed.stderr, re.M)
    assert parsed == [str(prod_copy / "hosts.yml")], parsed


def test_the_same_key_inside_the_inventory_directory_is_read_as_inventory(prod_copy):
    # What the check above guards against (the former suggestion,
    # inventories/prod/files/): each file there is handed to every
    # inventory plugin, and the run warns about each.
    (prod_copy / "files").mkdir()
    (prod_copy / "files" / "edge.key").write_text(_vaulted_key())
    listed = _list(prod_copy)
    assert f"Unable to parse {prod_copy / 'files' / 'edge.key'} as an inventory source" in listed.stderr, listed.stderr


def test_the_production_inventory_validates_with_its_documented_files(prod_copy, tmp_path):
    # The commented TLS settings, uncommented, find the files in the folder
    # they name (the roles check that each file exists on the controller).
    leaf = trustme.CA().issue_cert("edge.example.net")
    certificate = _documented_file(prod_copy, "nginx_lb_tls_certificate")
    certificate.parent.mkdir(parents=True, exist_ok=True)
    leaf.cert_chain_pems[0].write_to_path(str(certificate))
    leaf.private_key_pem.write_to_path(str(_documented_file(prod_copy, "nginx_lb_tls_key")))
    group_vars = prod_copy / "group_vars" / "edge" / "main.yml"
    group_vars.write_text(re.sub(r"^# ((nginx|haproxy)_lb_tls_(certificate|key): )", r"\1",
                                 group_vars.read_text(), flags=re.M))
    (prod_copy / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"edge": {"hosts": {
        "edge-a.example.net": {"ansible_host": "192.0.2.10", "ansible_connection": "local",
                               "ansible_python_interpreter": sys.executable}}}}}}))
    result = ansible_playbook(VALIDATE, prod_copy, {
        "vault_haproxy_stats_password": "not-a-default-" + "x" * 8,
        "edge_backends": SERVERS,
    }, timeout=180)
    assert result.rc == 0, result.failed or result.output[-3000:]
    assert set(result.stats) == {"edge-a.example.net"}
