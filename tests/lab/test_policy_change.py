"""One edit of the traffic policy, converged: it reaches both load balancers
of edge-1, hitlessly (reloads under load, zero failed requests), and the
inventory's own policy is put back afterwards."""

from __future__ import annotations

import time

import httpx
import pytest

from haproxy_lab import node
from labkit import lab_policy, lab_policy_overrides
from nginx_lab import ClientIPs, LoadGenerator, tls_context
from test_haproxy_converge import Load
from traffic.model import deep_merge

EDGE1 = "edge-1"
# The edit: the api class's bucket, rate 10 -> 20 and burst 20 -> 40.
EDIT = {"classes": {"api": {"rate": {"per_second": 20, "burst": 40}}}}


@pytest.fixture(scope="module")
def changed(converge, edge, ca_cert):
    host = node(EDGE1)
    pids = (host.run("systemctl show -p MainPID --value nginx").stdout, host.run("systemctl show -p MainPID --value haproxy").stdout)
    with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), websockets=2, max_seconds=150) as nginx_load, \
            Load(edge["endpoints"]["haproxy_http"]) as haproxy_load:
        time.sleep(1)
        result = converge({"traffic_policy_overrides": deep_merge(lab_policy_overrides(), EDIT)}, limit=EDGE1)
        time.sleep(1.5)  # traffic on the new workers too
    yield result, nginx_load.report, haproxy_load, pids
    restored = converge(limit=EDGE1)
    assert restored.rc == 0, restored.output[-3000:]


def test_the_change_converges_by_reloads(changed):
    result, _, _, (nginx_pid, haproxy_pid) = changed
    assert result.rc == 0, result.output[-3000:]
    assert "RUNNING HANDLER [nginx_lb : Reload nginx]" in result.output
    assert "RUNNING HANDLER [haproxy_lb : Reload haproxy]" in result.output
    host = node(EDGE1)
    # Reloaded, not restarted: the masters are the same processes.
    assert host.run("systemctl show -p MainPID --value nginx").stdout == nginx_pid
    assert host.run("systemctl show -p MainPID --value haproxy").stdout == haproxy_pid


def test_no_request_failed_on_either_load_balancer(changed):
    _, nginx_report, haproxy_load, _ = changed
    assert nginx_report.requests > 50 and nginx_report.failures == [], nginx_report.failures[:5]
    assert nginx_report.ws_failures == []
    assert haproxy_load.ok > 50 and haproxy_load.failures == [], haproxy_load.failures[:5]


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_both_load_balancers_enforce_the_new_burst(changed, edge, ca_cert, lb):
    rate = lab_policy(EDIT).traffic_class("api").rate
    url = edge["endpoints"]["nginx_https" if lb == "nginx" else "haproxy_http"]
    who = {"x-forwarded-for": ClientIPs().take().replace(".7", ".77")}
    with httpx.Client(base_url=url, verify=tls_context(ca_cert), timeout=10) as c:
        codes = [c.get("/api/new-burst", headers=who).status_code for _ in range(rate.burst + 10)]
    # The old burst (20) would refuse request 22; the new one serves 41 at once.
    assert 429 not in codes[:rate.burst + 1], codes
    assert 429 in codes, codes
