"""One change of edge-1's configuration, converged through playbooks/edge.yml
while both load balancers carry traffic and WebSockets: it reaches NGINX
and HAProxy by reloads, never restarts, and no request or WebSocket is lost.

The change touches what each load balancer renders from the traffic policy
and from its own variables at once: the api class's response timeout (2 s)
and its rate (10 -> 20 per second, burst 20 -> 40), the canary share
(10 -> 20), and a denied network on NGINX.  Each is observable afterwards,
which proves the reload took effect.  The inventory's own configuration is
put back when the module ends, the way `automata-lb` installs a change
(rendered, checked, reloaded): a second converge here would only prove
again what the first one did.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from haproxy_lab import WebSocketSession, haproxy_load, runtime, wait_for_new_worker_traffic, worker_traffic
from labkit import (ClientIPs, LoadGenerator, LoadReport, lab_policy, lab_policy_overrides, node,
                    put_back_the_inventorys_configs, tls_context)
from traffic.model import deep_merge

pytestmark = pytest.mark.usefixtures("trusted_gateway")

EDGE1 = "edge-1"
SENDERS = 20  # concurrent requests of the burst test
POLICY_EDIT = {"classes": {"api": {"timeouts": {"response": "2s"}, "rate": {"per_second": 20, "burst": 40}}},
               "canary": {"share": 20}}
CHANGE = {"traffic_policy_overrides": deep_merge(lab_policy_overrides(), POLICY_EDIT),
          "nginx_lb_deny_cidrs": ["192.0.2.0/24"]}


def _masters(host) -> tuple[str, str]:
    return tuple(host.run(f"systemctl show -p MainPID --value {service}").stdout.strip()
                 for service in ("nginx", "haproxy"))


@dataclass
class Changed:
    result: object
    nginx: LoadReport
    haproxy: LoadReport
    echoes_after: list[str]
    masters_before: tuple[str, str]
    masters_after: tuple[str, str]
    haproxy_worker_before: int
    haproxy_worker_after: int


@pytest.fixture(scope="module")
def changed(converge, edge, ca_cert) -> Changed:
    host = node(EDGE1)
    masters, worker = _masters(host), worker_traffic(host)[0]
    haproxy_url = edge["endpoints"]["haproxy_http"]
    # Opened before the reload, so the old HAProxy worker keeps serving them.
    sessions = [WebSocketSession(haproxy_url.replace("http://", "ws://") + "/ws") for _ in range(3)]
    try:
        with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), max_seconds=150) as nginx_load, \
                haproxy_load(haproxy_url, ca_cert) as haproxy:
            for load in (nginx_load, haproxy):
                load.wait_for_answers(50)
            result = converge(CHANGE, limit=EDGE1)
            if result.rc == 0:
                # Traffic on the new workers too: NGINX closes the old workers'
                # idle keep-alive connections, so what the load sends from now
                # on reaches the new ones; HAProxy's new worker counts its own.
                nginx_load.wait_for_answers(50, since=time.time())
                wait_for_new_worker_traffic(host, worker)
        echoes = []
        for n, session in enumerate(sessions):
            try:
                session.echo(f"after reload {n}")
                echoes.append("ok")
            except Exception as exc:  # noqa: BLE001 - any failure is a dropped WebSocket
                echoes.append(repr(exc))
    finally:
        for session in sessions:
            session.close()
    for lb, report in (("nginx", nginx_load.report), ("haproxy", haproxy.report)):
        print(f"\nreload under load ({lb}): {report.requests} requests, {len(report.failures)} failed; "
              f"{report.ws_messages} WebSocket echoes, {len(report.ws_failures)} dropped")
    yield Changed(result, nginx_load.report, haproxy.report, echoes, masters, _masters(host), worker,
                  worker_traffic(host)[0])
    put_back_the_inventorys_configs()


def test_the_change_reaches_both_load_balancers_by_reloads(changed):
    result = changed.result
    assert result.rc == 0, result.output[-3000:]
    assert result.changed[EDGE1] > 0
    assert {"nginx_lb : Reload nginx", "haproxy_lb : Reload haproxy"} <= set(result.handlers), result.handlers


def test_reloads_not_restarts(changed):
    # The masters are the same processes; HAProxy's worker is a new one.
    assert changed.masters_after == changed.masters_before, "a load balancer was restarted, not reloaded"
    assert changed.haproxy_worker_after not in (0, changed.haproxy_worker_before), "no new HAProxy worker"


def test_no_request_failed_on_either_load_balancer(changed):
    for report in (changed.nginx, changed.haproxy):
        assert report.requests > 100
        assert report.failures == [], report.failures[:5]


def test_no_websocket_was_dropped(changed):
    assert changed.nginx.ws_messages > 20
    assert changed.nginx.ws_failures == []
    # Opened on HAProxy's old worker before the reload, still answered by it.
    assert changed.echoes_after == ["ok"] * 3


def test_haproxy_runs_the_new_canary_share(changed):
    assert "proc.canary_percent: type=sint value=<20>" in runtime(node(EDGE1), "get var proc.canary_percent")


def test_a_slow_api_call_ends_at_the_new_response_timeout_and_ai_calls_keep_their_own(changed, https):
    client = {"x-forwarded-for": ClientIPs().take()}
    # The default pools now give up after 2 s (504, after the retry)...
    assert https.get("/api/slow", params={"delay": 3}, headers=client).status_code == 504
    # ...while the AI pool keeps its own 300 s.
    ai = https.get("/ai/slow", params={"seconds": 3}, headers=client)
    assert ai.status_code == 200
    assert ai.json()["seconds"] == 3


def test_the_denied_network_gets_403_on_nginx(changed, https):
    assert https.get("/api/x", headers={"x-forwarded-for": "192.0.2.77"}).status_code == 403
    assert https.get("/api/x", headers={"x-forwarded-for": ClientIPs().take()}).status_code == 200


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_both_load_balancers_enforce_the_new_burst(changed, edge, ca_cert, lb):
    new, old = lab_policy(POLICY_EDIT).traffic_class("api").rate, lab_policy().traffic_class("api").rate
    url = edge["endpoints"]["nginx_https" if lb == "nginx" else "haproxy_http"]
    who = {"x-forwarded-for": ClientIPs().take().replace(".7", ".77")}
    # Sent at once, over many connections: one after another, a busy machine
    # may never outrun what the bucket refills each second.
    count = new.burst + 4 * new.per_second
    with httpx.Client(base_url=url, verify=tls_context(ca_cert), timeout=10,
                      limits=httpx.Limits(max_connections=SENDERS)) as c, ThreadPoolExecutor(SENDERS) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda _: c.get("/api/new-burst", headers=who).status_code, range(count)))
        elapsed = time.monotonic() - started
    served = codes.count(200)
    print(f"\n{lb}: {served} of {count} served in {elapsed:.2f}s")
    assert set(codes) <= {200, 429}, codes
    # More than the old limits could have let through in that time...
    assert served > old.burst + 1 + old.per_second * elapsed, (served, elapsed)
    # ...at least the new burst, and a limit still: the rest refused.
    assert served >= new.burst + 1 and 429 in codes, (served, elapsed)
