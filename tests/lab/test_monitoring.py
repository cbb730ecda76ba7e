"""Monitoring on the lab: the real Prometheus scrapes every tier, the alert
rules load and fire on real faults, and every dashboard query has data.

The lab's Prometheus (container automata-lab-prometheus, 127.0.0.1:9090)
scrapes the exporters role edge_exporters installs, HAProxy's own exporter
and every backend, every few seconds, with the thresholds of
monitoring/alerts.yml as shortened by lab/alert-overrides.yml.
"""

from __future__ import annotations

import re
import time

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
    # The edge's log counters and the backend's own are scraped apart.
    wait_until(lambda: all(prom.query(f"count_over_time({series}[{RATE_INTERVAL}]) >= 2")
                           for series in ('nginx_log_requests_total{status="429"}',
                                          'nginx_log_requests_total{status=~"5.."}',
                                          'automata_http_requests_total{status=~"5.."}')), timeout=60, interval=1)


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


@pytest.fixture(scope="module")
def faults(prom, scrape, edge, ca_cert, lab) -> dict:
    """Two faults at once, one alert each: backend-3 stopped, backend-2
    answering 500.  {alert: seconds until it fired}, plus every alert's
    state for the healthy instances while both fired and what the load saw."""
    victim = next(b for b in lab["backends"] if b["name"] == "backend-3")
    edges = [node(e["name"]) for e in lab["edges"]]
    bound = max(_firing_bound(alert, scrape) for alert in ("BackendInstanceDown", "BackendHigh5xxRatio"))
    # POSTs are not retried on another server: the failing instance's share
    # reaches clients as 5xx at NGINX too.
    load = LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), http_workers=2,
                         websockets=0, path="/api/items", method="POST", max_seconds=bound + 30)
    alerts = {"BackendInstanceDown": {"instance": "backend-3"}, "BackendHigh5xxRatio": {"instance": "backend-2"},
              "NginxHigh5xxRatio": {"class": "api"}}
    seen: dict = {}

    def all_fired() -> bool:
        for alert, labels in alerts.items():
            if alert not in seen and prom.alert_state(alert, **labels) == "firing":
                seen[alert] = time.monotonic() - started
        return seen.keys() >= alerts.keys()

    started = time.monotonic()
    podman("stop", "-t", "40", victim["container"])  # SIGTERM: the backend drains, then exits
    _fault(lab, "backend-2", error_rate=1.0)
    try:
        with load:
            wait_until(all_fired, timeout=bound, interval=1)
            seen["healthy"] = {(alert, healthy): prom.alert_state(alert, instance=healthy)
                               for alert, healthy in (("BackendInstanceDown", "backend-1"),
                                                      ("BackendHigh5xxRatio", "backend-1"),
                                                      ("BackendHigh5xxRatio", "backend-3"))}
        seen["load"] = load.report
    finally:
        _fault(lab, "backend-2")
        podman("start", victim["container"])
        wait_until(lambda: prom.query('up{instance="backend-3"} == 1'), timeout=90, interval=1)
        for host in edges:
            wait_until_settled(host, HAPROXY_BACKENDS)
    print("\n" + ", ".join(f"{alert} fired {seen[alert]:.1f}s" for alert in alerts)
          + f" after the faults (bound {bound:.0f}s)")
    return seen


def test_a_stopped_backend_fires_its_alert(faults):
    assert faults["healthy"][("BackendInstanceDown", "backend-1")] == "inactive"


def test_a_5xx_burst_fires_the_error_ratio_alerts(faults):
    assert faults["load"].failures, "no request failed while backend-2 answered 500"
    for healthy in ("backend-1", "backend-3"):
        assert faults["healthy"][("BackendHigh5xxRatio", healthy)] == "inactive"
