"""Role variables given on the command line (`-e name=value`, always a string)
are used as the type meta/argument_specs.yml declares, or refused with the
variable and the type named before anything changes (docs/decisions.md, D6).

The validation play of playbooks/edge.yml runs on one host with
ansible_connection=local (tests/roles/typed.yml, which then writes every
role's typed variables and the exporter files); the load balancers' and
keepalived's configurations are rendered by their own config tasks
(bench/render.py), which pass them through `nginx -t`, `haproxy -c` and
`keepalived -t` on the way.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import crossplane
import pytest
import trustme
import yaml

from automata_lb.playbook import run as playbook_run
from bench.render import render_role
from traffic.drift import haproxy_sections

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).with_name("typed.yml")
SERVERS = [{"name": "backend-1", "address": "127.0.0.1", "port": 8000}]
CANARY = [{"name": "canary-1", "address": "127.0.0.1", "port": 8001}]
# What a group with a floating address declares (roles/edge_vip runs only there).
VIP = {"edge_vip_addresses": ["192.0.2.100/24"], "edge_vip_unicast_address": "192.0.2.11"}

# A number, a boolean and a list for each role, as an operator types them.
# edge_exporters declares no boolean.
GIVEN = {
    "kernel_tuning": ["kernel_tuning_nofile=30000", "kernel_tuning_apply_global=false",
                      "kernel_tuning_nofile_services=nginx", "kernel_tuning_sysctl_overrides=net.core.somaxconn=32768"],
    "nginx_lb": ["nginx_lb_worker_connections=2048", "nginx_lb_tls_enabled=false",
                 "nginx_lb_deny_cidrs=10.0.0.0/8,192.0.2.0/24"],
    "haproxy_lb": ["haproxy_lb_nbthread=2", "haproxy_lb_manage_service=false", "haproxy_lb_packages=haproxy",
                   "haproxy_lb_client_max_connections=0"],
    "edge_exporters": ["edge_exporters_node_port=9200", "edge_exporters_latency_buckets=0.1,0.5,1",
                       "edge_exporters_node_collectors=cpu,textfile"],
    "edge_vip": ["edge_vip_virtual_router_id=77", "edge_vip_preempt=true", "edge_vip_manage_service=false",
                 "edge_vip_addresses=192.0.2.100/24,192.0.2.101/24"],
}


@dataclass
class Run:
    rc: int
    typed: dict | None  # {role: {name without prefix: value}}, None when the run stopped
    failures: list[str]  # the `msg` of each host's failed task
    out: Path
    output: str


@pytest.fixture(scope="session")
def tls(tmp_path_factory) -> dict[str, str]:
    """A throwaway certificate and key, so nginx_lb runs with TLS on unless told otherwise."""
    pki = tmp_path_factory.mktemp("pki")
    leaf = trustme.CA().issue_cert("edge.test")
    leaf.cert_chain_pems[0].write_to_path(str(pki / "server.pem"))
    leaf.private_key_pem.write_to_path(str(pki / "server.key"))
    return {"certificate": str(pki / "server.pem"), "key": str(pki / "server.key")}


@pytest.fixture(scope="session")
def validate(tmp_path_factory, tls):
    """validate(*overrides) -> Run of tests/roles/typed.yml with `-e` each override."""
    inventory = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"edge": {
        "hosts": {"edge-test": {"ansible_host": "127.0.0.1", "ansible_connection": "local",
                                "ansible_python_interpreter": sys.executable}},
        "vars": {"edge_backends": SERVERS, "edge_canary_backends": CANARY,
                 "nginx_lb_tls_certificate": tls["certificate"], "nginx_lb_tls_key": tls["key"],
                 "haproxy_lb_stats_password": secrets.token_urlsafe(18),
                 "edge_vip_auth_pass": secrets.token_urlsafe(6), **VIP}}}}}))

    def run(*overrides: str) -> Run:
        out = tmp_path_factory.mktemp("out")
        run = playbook_run(PLAYBOOK, inventory, args=["-e", f"out_dir={out}",
                                                      *[arg for item in overrides for arg in ("-e", item)]],
                           timeout=300)
        typed = json.loads((out / "typed.json").read_text()) if (out / "typed.json").exists() else None
        return Run(run.rc, typed, [f["msg"] for f in run.failed.values()], out, run.output)

    return run


@pytest.fixture(scope="session")
def accepted(validate) -> Run:
    """One run with every role's command-line values."""
    run = validate(*[item for items in GIVEN.values() for item in items])
    assert run.rc == 0 and run.typed, run.output[-3000:]
    return run


def _filter_plugin(role: str, module: str):
    spec = importlib.util.spec_from_file_location(module, ROOT / "roles" / role / "filter_plugins" / f"{module}.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


def _keepalived_blocks(text: str) -> dict[str, list]:
    """keepalived.conf as {block header: [its lines' words, nested blocks as
    (header, [...])]}, top-level blocks only keyed; comments dropped."""
    top: dict[str, list] = {}
    stack: list[list] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[-1] == "{":
            block: list = []
            if stack:
                stack[-1].append((" ".join(words[:-1]), block))
            else:
                top[" ".join(words[:-1])] = block
            stack.append(block)
        elif words == ["}"]:
            stack.pop()
        else:
            stack[-1].append(words)
    return top


def _directives(tree: list[dict], name: str) -> list[list[str]]:
    """Args of every `name` directive anywhere in a crossplane tree."""
    found = []
    for d in tree:
        if d["directive"] == name:
            found.append(d["args"])
        found += _directives(d.get("block", []), name)
    return found


def test_kernel_tuning_uses_command_line_values_as_declared(accepted):
    typed = accepted.typed["kernel_tuning"]
    assert type(typed["nofile"]) is int and typed["nofile"] == 30000
    assert typed["apply_global"] is False
    assert typed["nofile_services"] == ["nginx"]
    assert typed["sysctl_overrides"] == {"net.core.somaxconn": "32768"}
    # Defaults derived from it follow, typed by their own role.
    assert accepted.typed["nginx_lb"]["worker_rlimit_nofile"] == 30000
    assert accepted.typed["haproxy_lb"]["nofile"] == 30000
    # "false" is false: what main.yml hands the sysctl filter leaves out every host-global key.
    sysctl = _filter_plugin("kernel_tuning", "sysctl")
    wanted = sysctl.kernel_tuning_scoped(typed["sysctl_base"] | typed["sysctl_overrides"],
                                         typed["global_prefixes"], typed["apply_global"])
    assert wanted["net.core.somaxconn"] == "32768"
    assert not [key for key in wanted if sysctl.kernel_tuning_is_global(key, typed["global_prefixes"])]


@pytest.mark.as_root
def test_nginx_lb_uses_command_line_values_as_declared(accepted, tmp_path, tls):
    typed = accepted.typed["nginx_lb"]
    assert type(typed["worker_connections"]) is int and typed["worker_connections"] == 2048
    assert typed["tls_enabled"] is False
    assert typed["deny_cidrs"] == ["10.0.0.0/8", "192.0.2.0/24"]
    # The same values through the role's own config tasks (nginx -t included).
    render_role("nginx_lb", tmp_path / "nginx", {
        "nginx_lb_manage_service": False, "nginx_lb_conf_dir": str(tmp_path / "nginx"),
        "nginx_lb_pid_file": str(tmp_path / "nginx.pid"), "nginx_lb_log_dir": str(tmp_path / "logs"),
        "nginx_lb_tls_certificate": tls["certificate"], "nginx_lb_tls_key": tls["key"],
        "nginx_lb_worker_rlimit_nofile": 20000, "nginx_lb_servers": SERVERS, "nginx_lb_canary_servers": CANARY,
    }, GIVEN["nginx_lb"])
    tree = crossplane.parse(str(tmp_path / "nginx" / "nginx.conf"), combine=True, catch_errors=False)
    tree = tree["config"][0]["parsed"]
    assert _directives(tree, "worker_connections") == [["2048"]]
    assert _directives(tree, "deny") == [["10.0.0.0/8"], ["192.0.2.0/24"]]
    assert not [args for args in _directives(tree, "listen") if "ssl" in args]
    assert not _directives(tree, "ssl_certificate")


@pytest.mark.as_root
def test_haproxy_lb_uses_command_line_values_as_declared(accepted, tmp_path, tls):
    typed = accepted.typed["haproxy_lb"]
    assert type(typed["nbthread"]) is int and typed["nbthread"] == 2
    assert typed["manage_service"] is False
    assert typed["packages"] == ["haproxy"]
    assert "stats_password" not in typed
    # The same values through the role's own config tasks (haproxy -c included;
    # with manage_service "false" taken for true the reload handler would run).
    render_role("haproxy_lb", tmp_path / "haproxy", {
        "haproxy_lb_config_dir": str(tmp_path / "haproxy"), "haproxy_lb_chroot": "",
        "haproxy_lb_admin_socket": str(tmp_path / "admin.sock"), "haproxy_lb_nofile": 20000,
        "haproxy_lb_stats_bind_address": "127.0.0.1", "haproxy_lb_stats_password": secrets.token_urlsafe(18),
        "haproxy_lb_stable_servers": SERVERS, "haproxy_lb_canary_servers": CANARY,
        # A TLS listener too: haproxy -c loads the certificate bundle the role writes.
        "haproxy_lb_binds": [{"address": "127.0.0.1", "port": 8000}, {"address": "127.0.0.1", "port": 9443, "tls": True}],
        "haproxy_lb_tls_certificate": tls["certificate"], "haproxy_lb_tls_key": tls["key"],
    }, GIVEN["haproxy_lb"])
    sections = haproxy_sections((tmp_path / "haproxy" / "haproxy.cfg").read_text())
    assert "nbthread 2" in sections["global"]
    assert [line for line in sections["frontend public"] if line.startswith("bind 127.0.0.1:9443 ssl crt ")]
    # 0 disables the per-peer connection limit.
    assert not [line for line in sections["frontend public"] if "sc0_conn_cur" in line]


@pytest.mark.skipif(shutil.which("mtail") is None, reason="mtail (Debian package mtail) is missing")
def test_edge_exporters_use_command_line_values_as_declared(accepted):
    typed = accepted.typed["edge_exporters"]
    assert type(typed["node_port"]) is int and typed["node_port"] == 9200
    assert typed["latency_buckets"] == [0.1, 0.5, 1.0]
    assert typed["node_collectors"] == ["cpu", "textfile"]
    args = shlex.split((accepted.out / "prometheus-node-exporter").read_text().split("ARGS=", 1)[1])[0].split()
    assert "--web.listen-address=127.0.0.1:9200" in args
    assert [a.removeprefix("--collector.") for a in args if a.count(".") == 1 and "=" not in a
            and a != "--collector.disable-defaults"] == ["cpu", "textfile"]
    # mtail accepts the program with those buckets (as the role's validate step checks it).
    program = accepted.out / "nginx_access.mtail"
    check = subprocess.run(["mtail", "--compile_only", "--logtostderr", "--address", "127.0.0.1", "--port", "0",
                            "--progs", str(program)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "buckets 0.1, 0.5, 1.0\n" in program.read_text()


@pytest.mark.as_root
def test_edge_vip_uses_command_line_values_as_declared(accepted, tmp_path):
    typed = accepted.typed["edge_vip"]
    assert type(typed["virtual_router_id"]) is int and typed["virtual_router_id"] == 77
    assert typed["preempt"] is True and typed["manage_service"] is False
    assert typed["addresses"] == ["192.0.2.100/24", "192.0.2.101/24"]
    assert "auth_pass" not in typed
    # The same values through the role's own config tasks (keepalived -t
    # included; with manage_service "false" taken for true the reload handler
    # would run).
    config = tmp_path / "keepalived"
    render_role("edge_vip", config, {
        "edge_vip_config_dir": str(config), "edge_vip_state_file": str(tmp_path / "state"),
        "edge_vip_textfile_dir": "", "edge_vip_group": "all", "edge_vip_auth_pass": secrets.token_urlsafe(6), **VIP,
    }, GIVEN["edge_vip"])
    instance = _keepalived_blocks((config / "keepalived.conf").read_text())["vrrp_instance edge_vip"]
    assert ["virtual_router_id", "77"] in instance
    # "true" is true: a delay before taking the addresses back, not nopreempt.
    assert ["preempt_delay", "60"] in instance and ["nopreempt"] not in instance
    assert dict(item for item in instance if isinstance(item, tuple))["virtual_ipaddress"] == [
        ["192.0.2.100/24", "dev", "eth0"], ["192.0.2.101/24", "dev", "eth0"]]


@pytest.mark.parametrize(("given", "named"), [
    ("kernel_tuning_nofile=lots", ["kernel_tuning_nofile", "int"]),
    ("kernel_tuning_apply_global=maybe", ["kernel_tuning_apply_global", "bool"]),
    ("nginx_lb_worker_connections=fifty", ["nginx_lb_worker_connections", "int"]),
    ("nginx_lb_tls_enabled=perhaps", ["nginx_lb_tls_enabled", "bool"]),
    ("nginx_lb_deny_cidrs=[10.0.0.0/8]", ["nginx_lb_deny_cidrs", "list", "comma-separated"]),
    ("nginx_lb_client_connection_rate_period=1m", ["nginx_lb_client_connection_rate_period", "seconds"]),
    ("nginx_lb_client_max_connections=-1", ["nginx_lb_client_max_connections", "0 (off) or"]),
    ("haproxy_lb_nbthread=two", ["haproxy_lb_nbthread", "int"]),
    ("edge_exporters_latency_buckets=0.1,slow", ["edge_exporters_latency_buckets", "float"]),
    ("edge_vip_virtual_router_id=fifty", ["edge_vip_virtual_router_id", "int"]),
    ("edge_vip_preempt=sometimes", ["edge_vip_preempt", "bool"]),
    ("edge_vip_addresses=[192.0.2.100/24]", ["edge_vip_addresses", "list", "comma-separated"]),
    # Removed with the traffic policy: refused rather than silently ignored.
    ("nginx_lb_conn_limit_per_ip=50", ["nginx_lb_conn_limit_per_ip", "not a variable of role nginx_lb"]),
    ("haproxy_lb_canary_percent=25", ["haproxy_lb_canary_percent", "not a variable of role haproxy_lb"]),
    # A misspelt name: refused, not left at its default, with the name meant.
    ("edge_vip_adress=192.0.2.100/24", ["edge_vip_adress", "not a variable of role edge_vip",
                                        "did you mean edge_vip_addresses?"]),
    ("nginx_lb_worker_conections=10", ["nginx_lb_worker_conections", "not a variable of role nginx_lb",
                                       "did you mean nginx_lb_worker_connections?"]),
])
def test_a_bad_command_line_value_is_refused_by_name_before_anything_changes(validate, given, named):
    run = validate(given)
    assert run.rc != 0
    assert len(run.failures) == 1, run.output[-3000:]
    for word in named:
        assert word in run.failures[0]
    # The play after the validation play never ran.
    assert run.typed is None and not list(run.out.iterdir())


def test_a_bad_command_line_value_writes_no_configuration(tmp_path):
    with pytest.raises(RuntimeError, match="nginx_lb_worker_connections"):
        render_role("nginx_lb", tmp_path / "nginx", {
            "nginx_lb_manage_service": False, "nginx_lb_conf_dir": str(tmp_path / "nginx"),
            "nginx_lb_tls_enabled": False, "nginx_lb_servers": SERVERS, "nginx_lb_canary_servers": CANARY,
        }, ("nginx_lb_worker_connections=fifty",))
    assert list((tmp_path / "nginx").iterdir()) == []
