"""automata-lb's changes on the lab, under a steady load through both load
balancers.  No request may fail, WebSockets on replaced instances must end
with a clean close (1001, going away), and afterwards the inventory and the
nodes agree (short form: the roles' render; make test-long: a converge,
changed=0).

The sequence, the README's own commands: scale-up, canary-deploy, rollback,
scale-down; make test-long adds a rolling-update of every stable instance
and its rollback.  The same reconciler replaces every stable instance
twice (promotion, rollback) under load and WebSockets in make test's
rehearsal through a production-shaped inventory (test_rehearsal.py); here
it drives the lab's own containers.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import httpx
import pytest
from haproxy_lab import wait_until_settled
from labkit import (INVENTORY, ClientIPs, LoadGenerator, WebSocketWatch, disagreements_with_the_inventory, node,
                    wait_until)
from test_cli_status import CLI, cli, cli_json

from automata_lb import inventory as inv

HAPROXY_BACKENDS = ["api", "auth", "websocket", "ai"]
INVENTORY_DIR = INVENTORY.parent
SEQUENCE = [("scale-up", ["scale-up", "1"]),
            ("canary-deploy", ["canary-deploy", "v2", "--weight", "10"]),
            ("rollback-canary", ["rollback"]),
            ("rolling-update", ["rolling-update", "v3"]),
            ("rollback-update", ["rollback"]),
            ("scale-down", ["scale-down", "1"])]
LONG_ONLY = {"rolling-update", "rollback-update"}


def _sequence(long_form: bool) -> list[tuple[str, list[str]]]:
    return [(name, args) for name, args in SEQUENCE if long_form or name not in LONG_ONLY]


def _instances(client: httpx.Client, ips: ClientIPs, count: int) -> Counter:
    seen = Counter()
    for _ in range(count):
        r = client.get("/api/where", headers={"x-forwarded-for": ips.take()})
        assert r.status_code == 200, r.status_code
        seen[r.headers["x-backend-instance"]] += 1
    return seen


@pytest.fixture(scope="module")
def changes(lab, edge, ca_cert, long_form):
    """Run the whole sequence under load; yield what each step said and what the load saw."""
    for e in lab["edges"]:
        wait_until_settled(node(e["name"]), HAPROXY_BACKENDS)
    original = INVENTORY_DIR.joinpath("group_vars/edge/main.yml").read_text()
    steps: dict[str, tuple[int, str]] = {}
    started: dict[str, float] = {}
    seen: dict[str, Counter] = {}
    ips = ClientIPs()
    nginx_load = LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=2,
                               websockets=0, max_seconds=600)
    haproxy_load = LoadGenerator(edge["endpoints"]["haproxy_http"], ca_cert, ClientIPs(), http_workers=2,
                                 websockets=0, max_seconds=600)
    try:
        with nginx_load, haproxy_load, WebSocketWatch(edge["endpoints"]["nginx_https"], ca_cert, ips) as sockets, \
                httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=10) as haproxy:
            for name, args in _sequence(long_form):
                started[name] = time.time()
                proc = cli(*args, timeout=600)
                steps[name] = (proc.returncode, proc.stdout + proc.stderr)
                if proc.returncode != 0:
                    break
                seen[name] = _instances(haproxy, ips, 60)
        yield steps, seen, nginx_load.report, haproxy_load.report, sockets, started
    finally:
        if INVENTORY_DIR.joinpath("group_vars/edge/main.yml").read_text() != original:
            cli("rollback", timeout=600)


def test_every_step_succeeds(changes, long_form):
    steps, *_ = changes
    assert [n for n, (rc, _) in steps.items() if rc == 0] == list(steps), {n: o[-1500:] for n, (rc, o) in steps.items()}
    assert list(steps) == [name for name, _ in _sequence(long_form)]


def test_scale_up_puts_the_new_instance_in_rotation(changes):
    _, seen, *_ = changes
    assert seen["scale-up"]["backend-4"] > 0
    assert "backend-4" not in seen["scale-down"]


def test_scale_up_reaches_both_load_balancers_before_the_command_returns(changes):
    _, _, nginx, haproxy, _, started = changes
    start, end = started["scale-up"], started["canary-deploy"]
    # A figure for the record (docs/operations-scaling.md), not a bound: when
    # each load balancer first answered from the new instance.
    firsts = {lb: min((o.at for o in report.outcomes if o.instance == "backend-4"), default=None)
              for lb, report in (("haproxy", haproxy), ("nginx", nginx))}
    print(f"\nscale-up 1: the command took {end - start:.1f}s; backend-4 answered through "
          + ", ".join(f"{lb} after {first - start:.1f}s" if first else f"{lb} never" for lb, first in firsts.items()))
    assert all(first is not None and first < end for first in firsts.values()), firsts


def test_releases_are_what_each_step_asked(lab, changes):
    steps, *_ = changes
    assert "canary-1: drain, replace canary -> v2" in steps["canary-deploy"][1]
    assert "canary-1: drain, replace v2 -> canary" in steps["rollback-canary"][1]
    if "rollback-update" in steps:
        assert "backend-1: drain, replace v3 -> stable" in steps["rollback-update"][1]
    _rc, doc = cli_json("status")
    versions = {s["server"]: s["version"] for s in doc["servers"]}
    assert versions == {b["name"]: b["version"] for b in lab["backends"]}


def test_no_request_failed_on_either_load_balancer(changes):
    _, _, nginx, haproxy, *_ = changes
    assert nginx.requests > 100 and haproxy.requests > 100
    assert haproxy.failures == []
    assert nginx.failures == []


def test_websockets_on_replaced_instances_closed_cleanly(changes):
    *_, sockets, _ = changes
    assert sockets.echoes > 0
    assert all(code == 1001 for _, code in sockets.ended), sockets.ended


def test_the_inventory_and_the_nodes_agree_afterwards(changes, long_form):
    assert disagreements_with_the_inventory(long_form) == []


def _stable_count() -> int:
    return len(inv.read(INVENTORY_DIR, "edge_backends"))


def test_the_lab_autoscaler_grows_under_load_and_shrinks_after_the_cool_down(lab, edge, ca_cert):
    """Slow /ai/ calls hold connections in flight: the autoscaler adds an
    instance, and takes it away once the load has been gone a cool-down."""
    assert _stable_count() == 3
    scaler = subprocess.Popen([str(CLI), "auto-scale", "--min-replicas", "3", "--max-replicas", "4",
                               "--target-inflight", "3", "--cooldown", "10", "--interval", "2", "--duration", "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    steady = LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=2, websockets=0,
                           max_seconds=330)
    try:
        with steady:
            # 12 calls of 2 s always in flight: 4 per instance against a target of 3.
            with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=12,
                               websockets=0, path="/ai/slow?seconds=2", max_seconds=150) as slow:
                wait_until(lambda: _stable_count() == 4, timeout=150, interval=1)
            wait_until(lambda: _stable_count() == 3, timeout=150, interval=1)
    finally:
        cli("disable-auto-scale")
        output = scaler.communicate(timeout=120)[0]
        if _stable_count() != 3:
            cli("scale-down", "3", "--to", timeout=600)
    assert "scaling to 4" in output and "scaling to 3" in output, output[-2000:]
    assert slow.report.failures == [] and steady.report.failures == []
    assert steady.report.requests > 100
