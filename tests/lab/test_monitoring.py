"""Monitoring on the lab: the real Prometheus scrapes every tier, the alert
rules load and fire on real faults, and every dashboard query has data.

The lab's Prometheus (container automata-lab-prometheus, 127.0.0.1:9090)
scrapes the exporters role edge_exporters installs, HAProxy's own exporter
and every backend, every few seconds, with the thresholds of
monitoring/alerts.yml as shortened by lab/alert-overrides.yml.
"""

from __future__ import annotations

import re

import httpx
import pytest
import yaml
from haproxy_lab import wait_until_settled
from labkit import ClientIPs, LoadGenerator, node, tls_context, wait_until

from lab import topology
from lab.monitoring import OVERRIDES, ready
from lab.podman import podman
from monitoring import dashboard, rules

# A panel's $__rate_interval, as Grafana would pick it for a 5 s scrape.
RATE_INTERVAL = "1m"
HAPROXY_BACKENDS = ["api", "auth", "websocket", "ai"]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result; a query Prometheus cannot parse fails the test."""
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        return self.http.get("/api/v1/targets").json()["data"]["activeTargets"]

    def rules(self) -> list[dict]:
        groups = self.http.get("/api/v1/rules").json()["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def alert_state(self, name: str, **labels: str) -> str:
        """"firing", "pending" or "inactive" for the alert instance with these labels."""
        for alert in self.http.get("/api/v1/alerts").json()["data"]["alerts"]:
            if alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items():
                return alert["state"]
        return "inactive"


def _seconds(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _firing_bound(alert: str, scrape: float) -> float:
    """`for` plus two scrape intervals, plus room for the rate window to fill."""
    thresholds = rules.load(yaml.safe_load(OVERRIDES.read_text()))[alert]
    return _seconds(thresholds["for"]) + 2 * scrape + 20


@pytest.fixture(scope="module")
def prom(lab) -> Prometheus:
    assert ready(), "the lab's Prometheus is not ready: `make lab` starts it"
    client = Prometheus(lab["prometheus"]["url"])
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def scrape(lab) -> float:
    return float(lab["prometheus"]["scrape_interval_seconds"])


@pytest.fixture(scope="module")
def clients(lab, edge, ca_cert):
    """HTTPS to NGINX and HTTP to HAProxy on edge-1."""
    with httpx.Client(base_url=edge["endpoints"]["nginx_https"], verify=tls_context(ca_cert), timeout=15) as nginx, \
            httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=15) as haproxy:
        yield nginx, haproxy


def _fault(lab, name: str, **state) -> None:
    """Set (or with no state, clear) a backend's injected fault."""
    admin = next(b for b in lab["backends"] if b["name"] == name)["endpoints"]["admin"]
    (httpx.put(f"{admin}/fault", json=state, timeout=5) if state else
     httpx.delete(f"{admin}/fault", timeout=5)).raise_for_status()


@pytest.fixture(scope="module")
def traffic(lab, clients, prom):
    """Every kind of request the dashboard shows: each class through both load
    balancers, 429s from a burst, and one 5xx through NGINX."""
    nginx, haproxy = clients
    ips = ClientIPs()
    for client in (nginx, haproxy):
        for path in ("/api/items/1", "/auth/session", "/ai/complete?delay=0.05", "/health"):
            for _ in range(3):
                client.get(path, headers={"x-forwarded-for": ips.take()})
    burst = ips.take()
    refused = [nginx.get("/auth/login", headers={"x-forwarded-for": burst}).status_code for _ in range(30)]
    assert 429 in refused, "NGINX's auth rate limit refused nothing in a burst of 30"
    refused = [haproxy.get("/auth/login").status_code for _ in range(20)]
    assert 429 in refused, "HAProxy's auth rate limit refused nothing in a burst of 20"
    # A POST is never retried on another server, so one that lands on the
    # failing instance reaches the client as a 5xx.
    _fault(lab, "backend-2", error_rate=1.0)
    try:
        statuses = [nginx.post("/api/items", json={}, headers={"x-forwarded-for": ips.take()}).status_code
                    for _ in range(12)]
    finally:
        _fault(lab, "backend-2")
    assert any(s >= 500 for s in statuses), f"no 5xx reached the client: {statuses}"
    # rate() needs two samples of a series inside its window: wait for the
    # second scrape of the counters these requests created.
    wait_until(lambda: all(prom.query(f"count_over_time(nginx_log_requests_total{{{s}}}[{RATE_INTERVAL}]) >= 2")
                         for s in ('status="429"', 'status=~"5.."')), timeout=60, interval=1)


def test_prometheus_scrapes_every_tier(prom):
    expected = {("prometheus", topology.PROMETHEUS_NAME)}
    expected |= {(job, e.name) for job in topology.EDGE_EXPORTERS for e in topology.EDGES}
    expected |= {("backend", b.name) for b in topology.BACKENDS}

    def all_up() -> bool:
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in prom.targets()}
        return seen.keys() == expected and set(seen.values()) == {"up"}

    wait_until(all_up, timeout=90, interval=1)


def test_backends_carry_their_version(prom):
    versions = {r["metric"]["instance"]: r["metric"]["version"] for r in prom.query('up{job="backend"}')}
    assert versions == {b.name: b.version for b in topology.BACKENDS}


def test_every_alert_rule_is_loaded_and_evaluates(prom):
    wait_until(lambda: all(r["health"] != "unknown" for r in prom.rules()), timeout=60, interval=1)
    loaded = {r["name"]: r for r in prom.rules()}
    assert set(loaded) == set(rules.ALERTS)
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        prom.query(rule["query"])


def test_every_dashboard_query_returns_data(prom, traffic):
    empty = []
    for title, expr in dashboard.queries(dashboard.build()):
        result = prom.query(expr.replace("$__rate_interval", RATE_INTERVAL))
        if not result and title not in dashboard.EMPTY_ON_LAB:
            empty.append(f"{title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_a_stopped_backend_fires_its_alert(prom, scrape, lab):
    victim = next(b for b in lab["backends"] if b["name"] == "backend-3")
    edges = [node(e["name"]) for e in lab["edges"]]
    podman("stop", "-t", "40", victim["container"])  # SIGTERM: the backend drains, then exits
    try:
        bound = _firing_bound("BackendInstanceDown", scrape)
        took = wait_until(lambda: prom.alert_state("BackendInstanceDown", instance="backend-3") == "firing",
                        timeout=bound, interval=1)
        print(f"BackendInstanceDown fired {took:.1f}s after the stop (bound {bound:.0f}s)")
        assert prom.alert_state("BackendInstanceDown", instance="backend-1") == "inactive"
    finally:
        podman("start", victim["container"])
        wait_until(lambda: prom.query('up{instance="backend-3"} == 1'), timeout=90, interval=1)
        for host in edges:
            wait_until_settled(host, HAPROXY_BACKENDS)


def test_a_5xx_burst_fires_the_error_ratio_alerts(prom, scrape, edge, ca_cert, lab):
    edges = [node(e["name"]) for e in lab["edges"]]
    bound = _firing_bound("BackendHigh5xxRatio", scrape)
    _fault(lab, "backend-2", error_rate=1.0)
    # POSTs are not retried on another server: the failing instance's share
    # reaches clients as 5xx at NGINX too.
    load = LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=2,
                         websockets=0, path="/api/items", method="POST", max_seconds=bound + 30)
    try:
        with load:
            took = wait_until(lambda: prom.alert_state("BackendHigh5xxRatio", instance="backend-2") == "firing",
                            timeout=bound, interval=1)
            print(f"BackendHigh5xxRatio fired {took:.1f}s after the fault (bound {bound:.0f}s)")
            wait_until(lambda: prom.alert_state("NginxHigh5xxRatio", **{"class": "api"}) == "firing",
                     timeout=bound, interval=1)
        assert load.report.failures, "no request failed while backend-2 answered 500"
        for healthy in ("backend-1", "backend-3"):
            assert prom.alert_state("BackendHigh5xxRatio", instance=healthy) == "inactive"
    finally:
        _fault(lab, "backend-2")
        for host in edges:
            wait_until_settled(host, HAPROXY_BACKENDS)
