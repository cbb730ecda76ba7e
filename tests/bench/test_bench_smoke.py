"""Smoke test of the benchmark harness (bench/, docs/benchmarks.md).

Not a benchmark: no timing is asserted.  It runs the harness's pieces on a
tiny scale so a broken benchmark shows up in CI instead of on the day
someone needs the numbers.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import ExitStack

import pytest

from bench import capacity, changes, render
from bench.load import LoadSettings
from bench.run import measure, probe
from bench.servers import Server, fill_template, haproxy_argv, nginx_argv

pytestmark = pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("wrk")),
                                reason="needs the nginx and wrk binaries (Debian packages nginx, wrk)")

# Not the benchmark's own ports, so this can run while a benchmark does.
PORT = 18101


@pytest.fixture()
def backend(tmp_path):
    conf = fill_template("backend.conf", tmp_path / "backend.conf", port=PORT)
    with Server("backend", nginx_argv(conf), PORT, tmp_path) as server:
        yield server


def test_a_short_run_counts_requests_and_the_servers_cpu_time(backend):
    probe(PORT)
    [sample] = measure(f"http://127.0.0.1:{PORT}/", LoadSettings(threads=1, connections=4, duration_s=1),
                       repeats=1, warmup_s=1, backend=backend, lb=None, cpus=None)
    assert sample.requests > 1000
    assert sum(sample.errors.values()) == 0
    # Thousands of requests cost the backend at least one 10 ms tick.
    assert sample.backend_ticks > 0
    assert sample.backend_us_per_req > 0


def test_the_capacity_client_holds_and_reuses_its_connections(backend):
    result = capacity.hold(PORT, 50)
    assert result.ok, result.errors
    assert result.held == 50


@pytest.mark.as_root
@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_the_roles_render_configs_that_start_and_proxy(lb, backend, tmp_path):
    # The "ours" columns are rendered by the roles: a role change that the
    # benchmark's substitutions break (two servers of one pool with the same
    # name, say) must fail here, not on the day the numbers are needed.
    if lb == "haproxy" and not shutil.which("haproxy"):
        pytest.skip("needs the haproxy binary")
    port = PORT + 10
    if lb == "nginx":
        argv = nginx_argv(render.nginx(tmp_path / "ours", port, PORT, status_port=port + 1))
    else:
        argv = haproxy_argv(render.haproxy(tmp_path / "ours", port, PORT, stats_port=port + 1))
    with Server(f"{lb}-ours", argv, port, tmp_path):
        probe(port, "/api/")


def test_stopping_a_server_leaves_none_of_its_processes(tmp_path):
    conf = fill_template("backend.conf", tmp_path / "backend.conf", port=PORT)
    with Server("backend", nginx_argv(conf), PORT, tmp_path) as server:
        tree = server.pids()
    assert len(tree) >= 2, "an nginx master and at least one worker"
    alive = [pid for pid in tree if _running(pid)]
    assert alive == []


def test_a_config_with_an_unfilled_placeholder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="@BACKEND_PORT@"):
        fill_template("nginx-stock.conf", tmp_path / "x.conf", port=PORT)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("setting", ["", "ulimit-n 20000", "fd-hard-limit 20000"])
def test_haproxy_will_not_hold_10000_connections_under_20000_descriptors(setting, tmp_path):
    # Why haproxy_lb's maxconn is (nofile - 256) / 2: HAProxy reserves a
    # descriptor for each side of every connection and refuses to start when
    # maxconn cannot be met, whichever global limit setting asks it to try
    # (docs/benchmarks.md, "Connection capacity").  Fails when an upgrade
    # changes that, so the role's formula can be revisited.
    if not shutil.which("haproxy"):
        pytest.skip("needs the haproxy binary")
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(f"global\n    maxconn 10000\n    {setting}\n"
                    "defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n    timeout connect 1s\n"
                    f"frontend f\n    bind 127.0.0.1:{PORT + 20}\n")
    run = subprocess.run(["prlimit", "--nofile=20000:20000", "haproxy", "-db", "-f", str(conf)],
                         capture_output=True, text=True, timeout=10)
    assert run.returncode != 0
    assert "Cannot raise FD limit to 20017" in run.stderr or "too low for maxconn=10000" in run.stderr, run.stderr


@pytest.mark.skipif(not changes.LUA_MODULE.exists(),
                    reason="needs libnginx-mod-http-lua (scripts/bootstrap.sh installs it)")
def test_a_pool_changed_through_lua_reaches_the_clients_and_loses_no_request(tmp_path):
    # The benchmark's claim about the Lua balancer, on a tiny scale: each
    # change is answered by the new backend, and a plain keep-alive client
    # that never resends loses nothing (no reload closes its connection).
    ports = changes.Ports(PORT + 40)
    with ExitStack() as stack:
        changes.backends(stack, tmp_path, ports)
        result = changes.run("lua", tmp_path, ports, changes=4, clients=2, gap_s=0.2)
    assert result.skipped is None
    assert len(result.effect_s) == 4
    assert result.requests > 100
    assert result.failures == {}
