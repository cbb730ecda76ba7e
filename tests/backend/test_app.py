"""The main and admin apps in-process: endpoints, headers, metrics, faults."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from automata_backend.app import create_app
from automata_backend.state import Backend, CircuitBreaker, DbPool, InvalidField, Settings
from tests.kit import wait_until

NAMED_METRICS = [
    "automata_active_connections", "automata_max_connections", "automata_circuit_breaker_open",
    "automata_websocket_connections", "automata_websocket_messages", "automata_db_connections_active",
    "automata_db_connections_idle", "automata_http_requests", "automata_http_request_duration_seconds",
]


def samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics keyed by (name, sorted labels)."""
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_total(client, route: str, method: str, status: str) -> float:
    key = ("automata_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return samples(client).get(key, 0.0)


# --- endpoints and identity headers -------------------------------------------------------

@pytest.mark.parametrize("method,path,status", [
    ("GET", "/api/users/1", 200), ("POST", "/auth/login", 200), ("GET", "/ai/answer?seconds=0", 200),
    ("GET", "/health", 200), ("GET", "/healthz", 200), ("GET", "/health/detailed", 200),
    ("GET", "/metrics", 200), ("GET", "/metrics/performance", 200),
    ("GET", "/no/such/route", 404), ("GET", "/api/x?delay=nope", 422), ("TRACE", "/api/x", 405),
])
def test_every_response_names_instance_and_version(client, method, path, status):
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["x-backend-instance"] == "backend-1"
    assert r.headers["x-backend-version"] == "stable"


def test_injected_errors_also_carry_identity_headers(client, admin):
    admin.put("/fault", json={"error_rate": 1.0, "error_status": 502})
    r = client.get("/api/x")
    assert r.status_code == 502
    assert r.headers["x-backend-instance"] == "backend-1"


def test_api_echoes_request_and_forwarding_headers(client):
    r = client.put("/api/orders/7?page=2", headers={
        "X-Forwarded-For": "203.0.113.9, 10.77.7.11", "X-Forwarded-Proto": "https",
        "X-Real-IP": "203.0.113.9", "X-Request-ID": "req-42", "Host": "edge.automata.test"})
    body = r.json()
    assert body["method"] == "PUT" and body["path"] == "/api/orders/7"
    assert body["query"] == {"page": "2"}
    assert body["instance"] == "backend-1" and body["version"] == "stable"
    # The peer address is the connection's, never what X-Forwarded-For claims.
    assert body["client"] == "testclient"
    assert body["headers"]["x-forwarded-for"] == "203.0.113.9, 10.77.7.11"
    assert body["headers"]["x-forwarded-proto"] == "https"
    assert body["headers"]["x-real-ip"] == "203.0.113.9"
    assert body["headers"]["x-request-id"] == "req-42"
    assert body["headers"]["host"] == "edge.automata.test"


def test_api_size_returns_a_body_of_that_many_bytes(client):
    assert len(client.get("/api/blob?size=123457").content) == 123457


def test_api_delay_and_ai_seconds_are_honoured(client):
    t = time.monotonic()
    assert client.get("/api/slow?delay=0.3").status_code == 200
    assert time.monotonic() - t >= 0.3
    t = time.monotonic()
    assert client.get("/ai/generate?seconds=0.4").json()["seconds"] == 0.4
    assert time.monotonic() - t >= 0.4


@pytest.mark.parametrize("path,field", [
    ("/api/x?delay=abc", "delay"), ("/api/x?delay=61", "delay"), ("/api/x?delay=nan", "delay"),
    ("/api/x?size=-1", "size"), ("/api/x?size=1.5", "size"), ("/ai/x?seconds=601", "seconds"),
])
def test_bad_query_parameters_are_422_naming_the_parameter(client, path, field):
    r = client.get(path)
    assert r.status_code == 422
    assert r.json()["field"] == field and field in r.json()["error"]


def test_login_hands_out_a_token(client):
    body = client.post("/auth/login", json={"username": "ada"}).json()
    assert body["path"] == "/auth/login" and len(body["token"]) >= 16


# --- health -----------------------------------------------------------------------------------

def test_health_reports_healthy_with_components(client):
    assert client.get("/health").json()["status"] == "healthy"
    detailed = client.get("/health/detailed").json()
    assert set(detailed["components"]) == {"db_pool", "circuit_breaker", "websockets", "uptime"}
    assert detailed["components"]["db_pool"]["idle"] == 20
    assert detailed["components"]["circuit_breaker"]["status"] == "closed"


def test_health_fault_fails_readiness_and_liveness_until_reset(client, admin):
    admin.put("/fault", json={"health": "fail"})
    assert client.get("/health").status_code == 503
    assert client.get("/health").json()["status"] == "unhealthy"
    assert client.get("/healthz").status_code == 503
    admin.delete("/fault")
    assert client.get("/health").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_draining_fails_readiness_but_not_liveness(client, backend):
    backend.start_drain()
    r = client.get("/health")
    assert (r.status_code, r.json()["status"]) == (503, "draining")
    assert client.get("/healthz").status_code == 200


# --- metrics ----------------------------------------------------------------------------------

def test_every_named_metric_is_exposed(client):
    names = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert set(NAMED_METRICS) <= names


def test_request_counter_uses_route_templates_not_raw_paths(client):
    client.get("/api/users/1")
    client.get("/api/users/2")
    client.get("/does/not/exist")
    values = samples(client)
    assert requests_total(client, "/api/{path:path}", "GET", "200") == 2
    assert requests_total(client, "other", "GET", "404") == 1
    routes = {dict(labels).get("route") for (name, labels) in values if name == "automata_http_requests_total"}
    assert not any("users" in r for r in routes)
    assert values[("automata_http_request_duration_seconds_count", (("route", "/api/{path:path}"),))] == 2


def test_unknown_methods_are_one_label_value(client):
    client.request("BREW", "/api/pot")
    client.request("PROPFIND", "/api/pot")
    assert requests_total(client, "/api/{path:path}", "OTHER", "405") == 2


def test_gauges_show_limits_and_pool(client):
    values = samples(client)
    assert values[("automata_max_connections", ())] == 1000
    assert values[("automata_db_connections_idle", ())] == 20
    assert values[("automata_db_connections_active", ())] == 0
    # The scrape itself is the one active connection.
    assert values[("automata_active_connections", ())] == 1


def test_performance_summary_has_counts_and_percentiles(client):
    for _ in range(4):
        client.get("/api/x")
    client.get("/api/x?delay=0.2")
    perf = client.get("/metrics/performance").json()
    api = perf["routes"]["/api/{path:path}"]
    assert api["requests"] == 5 and api["by_status"] == {"200": 5}
    latency = api["latency_seconds"]
    assert latency["p50"] < 0.2 <= latency["p99"]
    assert perf["instance"] == "backend-1" and perf["uptime_seconds"] >= 0


# --- faults -----------------------------------------------------------------------------------

def test_faults_are_off_by_default(admin):
    assert admin.get("/fault").json() == {"error_rate": 0.0, "error_status": 500, "latency_ms": 0, "health": "ok"}


def test_error_rate_one_fails_every_traffic_class_but_not_health_or_metrics(client, admin):
    assert admin.put("/fault", json={"error_rate": 1.0, "error_status": 503}).status_code == 200
    for path in ("/api/x", "/auth/login", "/ai/x?seconds=0"):
        assert client.get(path).status_code == 503
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert requests_total(client, "/api/{path:path}", "GET", "503") == 1


def test_latency_fault_delays_traffic_not_metrics(client, admin, backend):
    admin.put("/fault", json={"latency_ms": 300})
    t = time.monotonic()
    client.get("/api/x")
    assert time.monotonic() - t >= 0.3  # the injected delay happened
    # While a delayed request waits, /metrics answers: it is not delayed.
    admin.put("/fault", json={"latency_ms": 2000})
    with ThreadPoolExecutor(1) as pool:
        delayed = pool.submit(client.get, "/api/x")
        wait_until(lambda: backend.inflight_http >= 1, 5, interval=0.01, what="the delayed request in flight")
        assert client.get("/metrics").status_code == 200
        assert not delayed.done(), "/metrics answered only after the delayed request"
        assert delayed.result().status_code == 200


@pytest.mark.parametrize("update,field", [
    ({"error_rate": 1.5}, "error_rate"), ({"error_rate": True}, "error_rate"),
    ({"error_status": 404}, "error_status"), ({"error_status": "500"}, "error_status"),
    ({"latency_ms": -1}, "latency_ms"), ({"latency_ms": 2.5}, "latency_ms"),
    ({"health": "maybe"}, "health"), ({"brownout": 1}, "brownout"), ([1], "body"),
])
def test_invalid_fault_is_422_naming_the_field(admin, update, field):
    r = admin.put("/fault", json=update)
    assert r.status_code == 422
    assert r.json()["field"] == field and field in r.json()["error"]


def test_invalid_fault_changes_nothing(admin):
    assert admin.put("/fault", json={"error_rate": 0.5, "health": "bad"}).status_code == 422
    assert admin.get("/fault").json()["error_rate"] == 0.0


def test_put_merges_and_delete_resets(admin):
    admin.put("/fault", json={"error_rate": 0.25})
    assert admin.put("/fault", json={"latency_ms": 10}).json() == {
        "error_rate": 0.25, "error_status": 500, "latency_ms": 10, "health": "ok"}
    admin.delete("/fault")
    assert admin.get("/fault").json()["error_rate"] == 0.0


def test_fault_api_is_not_on_the_main_port(client, admin):
    assert client.get("/fault").status_code == 404
    assert client.put("/fault", json={"error_rate": 1.0}).status_code == 404
    assert admin.get("/fault").json()["error_rate"] == 0.0


# --- circuit breaker and pool -----------------------------------------------------------------

def test_five_consecutive_failures_open_the_breaker_which_then_fails_fast(client, admin):
    admin.put("/fault", json={"error_rate": 1.0})
    for _ in range(5):
        assert client.get("/api/x").status_code == 500
    assert samples(client)[("automata_circuit_breaker_open", ())] == 1
    admin.put("/fault", json={"error_rate": 0.0})
    r = client.get("/api/x")
    assert (r.status_code, r.json()["error"]) == (503, "circuit breaker open")
    admin.delete("/fault")
    assert client.get("/api/x").status_code == 200
    assert samples(client)[("automata_circuit_breaker_open", ())] == 0


def test_breaker_half_opens_after_recovery_timeout():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=300, clock=lambda: now[0])
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 299.9
    assert not breaker.allow()
    now[0] = 300.0
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record_failure()  # the trial failed: open for another recovery_timeout
    assert breaker.state == "open"
    now[0] = 600.0
    breaker.record_success()
    assert breaker.state == "closed"


def test_pool_keeps_pool_size_warm_and_caps_at_max_connections():
    async def scenario():
        pool = DbPool(max_connections=3, pool_size=2, pool_timeout=0.2)
        async with pool.connection(), pool.connection(), pool.connection():
            assert (pool.active, pool.idle) == (3, 0)
            with pytest.raises(Exception) as exc:
                async with pool.connection():
                    pass
            assert type(exc.value).__name__ == "PoolTimeout"
        assert (pool.active, pool.idle) == (0, 2)

    asyncio.run(scenario())


@pytest.mark.parametrize("kwargs,field", [
    ({"instance": "backend 1"}, "instance"), ({"version": ""}, "version"),
    ({"grace_period": 0}, "grace_period"), ({"max_connections": 0}, "max_connections"),
])
def test_bad_settings_fail_naming_the_setting(kwargs, field):
    values = {"instance": "backend-1", "version": "stable", **kwargs}
    with pytest.raises(InvalidField) as exc:
        Settings(**values)
    assert exc.value.field == field


def test_two_instances_in_one_process_keep_separate_metrics(open_client):
    one, two = (open_client(create_app(Backend(Settings(name, "stable")))) for name in ("a-1", "a-2"))
    one.get("/api/x")
    assert requests_total(one, "/api/{path:path}", "GET", "200") == 1
    assert requests_total(two, "/api/{path:path}", "GET", "200") == 0
    assert one.get("/health").headers["x-backend-instance"] == "a-1"
    assert two.get("/health").headers["x-backend-instance"] == "a-2"
