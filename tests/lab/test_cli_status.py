"""automata-lb's read commands on the lab: status, health-check, metrics.

Run as an operator runs them: the console script in the venv, exit codes and
--json read as a script would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from haproxy_lab import health_settings, wait_until_settled
from labkit import ClientIPs, node, tls_context, wait_until

from lab.podman import podman

CLI = str(Path(sys.executable).parent / "automata-lb")
HAPROXY_BACKENDS = ["api", "auth", "websocket", "ai"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> tuple[int, dict]:
    proc = cli(*args, "--json")
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module", autouse=True)
def settled(lab):
    """Start from every server UP at full weight (an earlier test may have left one rising)."""
    for e in lab["edges"]:
        wait_until_settled(node(e["name"]), HAPROXY_BACKENDS)


def test_status_reports_every_node_and_server_up(lab):
    rc, doc = cli_json("status")
    assert rc == 0, doc
    assert [e["node"] for e in doc["edges"]] == [e["name"] for e in lab["edges"]]
    for e in doc["edges"]:
        assert e["reachable"] and e["nginx"]["active"] and e["haproxy"]["active"]
        assert e["nginx"]["version"] and e["haproxy"]["config_hash"]
    assert {s["server"]: s["state"] for s in doc["servers"]} == {b["name"]: "UP" for b in lab["backends"]}
    assert doc["prometheus"] == lab["prometheus"]["url"]


def test_health_check_passes_on_a_healthy_lab(lab):
    rc, doc = cli_json("health-check")
    assert rc == 0, [c for c in doc["checks"] if not c["ok"]]
    # /health, /healthz and /health/detailed of every backend, each edge's own
    # and its keepalived, the floating address, Prometheus.
    assert len(doc["checks"]) == 3 * len(lab["backends"]) + 4 * len(lab["edges"]) + 1 + 1
    (address,) = [c for c in doc["checks"] if c["component"].startswith("floating address")]
    assert address["ok"] and address["endpoint"] in {f"held by {e['name']}" for e in lab["edges"]}, address


def test_status_names_the_floating_address_holder_and_every_nodes_vrrp_state(lab):
    rc, doc = cli_json("status")
    assert rc == 0, doc
    (vip,) = doc["floating_addresses"]
    (holder,) = doc["floating_addresses"][vip]
    states = {e["node"]: e["keepalived"]["state"] for e in doc["edges"]}
    assert states == {e["name"]: "MASTER" if e["name"] == holder else "BACKUP" for e in lab["edges"]}
    # The table names it too, whole, however narrow the terminal.
    table = cli("status", timeout=120).stdout
    assert f"floating address {vip}: {holder}" in table


def test_metrics_reads_prometheus(lab):
    rc, doc = cli_json("metrics")
    assert rc == 0
    assert doc["source"] == lab["prometheus"]["url"]
    assert set(doc["tiers"]) == {"nginx", "haproxy", "backends"}


def test_a_backend_stopped_behind_the_clis_back_is_reported_down(lab):
    victim = next(b for b in lab["backends"] if b["name"] == "backend-2")
    edges = [node(e["name"]) for e in lab["edges"]]
    settings = health_settings(edges[0])
    podman("stop", "-t", "40", victim["container"])
    try:
        rc, doc = cli_json("health-check")
        assert rc == 1
        failing = {c["component"].split()[0] for c in doc["checks"] if not c["ok"]}
        assert failing == {"backend-2"}
        # HAProxy marks it DOWN after `fall` failed checks `inter` apart.
        wait_until(lambda: cli_json("status")[1]["servers"][1]["state"].startswith("DOWN"),
                 timeout=settings.inter * (settings.fall + 1) + 10, interval=1)
        rc, doc = cli_json("status")
        assert rc == 1
        assert {s["server"]: s["state"].split()[0] for s in doc["servers"]}["backend-2"] == "DOWN"
    finally:
        podman("start", victim["container"])
        for host in edges:
            wait_until_settled(host, HAPROXY_BACKENDS)


@pytest.mark.parametrize(("args", "message"), [
    (["--stack", "qa", "status"], "'qa' is not one of dev, staging, prod"),
    (["--target", "cloud", "status"], "only 'lab' is a --target"),
    (["--inventory", "inventories/nowhere", "status"], "no such inventory"),
])
def test_bad_arguments_exit_with_a_message_naming_them(args, message):
    proc = cli(*args)
    assert proc.returncode in (2, 3)
    assert message in proc.stderr


def test_the_canary_share_status_reports_is_what_both_load_balancers_send(lab, edge, ca_cert):
    """2,000 requests to /api/ through each load balancer: the canary's share
    is the policy's within 3 points (binomial spread at 10%: 0.7 points)."""
    _rc, doc = cli_json("status")
    share = {e["haproxy"]["canary_share"] for e in doc["edges"]}
    assert share == {10}
    ips = ClientIPs()
    for url, verify in ((edge["endpoints"]["nginx_https"], tls_context(ca_cert)), (edge["endpoints"]["haproxy_http"], True)):
        with httpx.Client(base_url=url, verify=verify, timeout=10) as client:
            seen = [client.get("/api/share", headers={"x-forwarded-for": ips.take()}).headers["x-backend-version"]
                    for _ in range(2000)]
        measured = 100 * seen.count("canary") / len(seen)
        assert abs(measured - 10) <= 3, f"{url}: {measured:.1f}% went to the canary"
