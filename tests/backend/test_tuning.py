"""AUTOMATA_* tuning: every variable the Pulumi program sets is read,
checked at start (a bad value stops the process naming the variable) and
changes what the running process does."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import httpx
import pytest
import websockets

from automata_backend.state import Backend, InvalidField, Settings
from automata_backend.tuning import VARIABLES, Tuning
from tests.kit import free_port, wait_until, wait_until_async

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_every_variable_the_pulumi_program_sets_is_read():
    from infra.namespace import runtime_config_data
    from infra.settings import RuntimeSettings

    configmap = set(runtime_config_data(RuntimeSettings(max_connections=100, pool_size=20, pool_timeout=30,
                                                        failure_threshold=5, recovery_timeout=300)))
    assert configmap <= set(VARIABLES)
    # Any AUTOMATA_* the program hands over anywhere (ConfigMap, container
    # env), so one added later fails here until the backend reads it.
    named = {m for f in INFRA.glob("*.py") for m in re.findall(r"\bAUTOMATA_[A-Z0-9_]+", f.read_text())}
    assert {"AUTOMATA_TRAFFIC_CLASS", "AUTOMATA_REQUEST_TIMEOUT"} <= named
    assert named <= set(VARIABLES), named - set(VARIABLES)


def test_the_configmap_values_parse_to_the_documented_defaults():
    env = {"AUTOMATA_MAX_CONNECTIONS": "100", "AUTOMATA_POOL_SIZE": "20", "AUTOMATA_POOL_TIMEOUT": "30",
           "AUTOMATA_CB_FAILURE_THRESHOLD": "5", "AUTOMATA_CB_RECOVERY_TIMEOUT": "300",
           "AUTOMATA_TRAFFIC_CLASS": "api", "AUTOMATA_REQUEST_TIMEOUT": "60"}
    assert Tuning.from_env(env) == Tuning(traffic_class="api", request_timeout=60.0)
    assert Tuning.from_env({}) == Tuning()


def test_pool_and_breaker_values_reach_the_balancer_of_the_ai_pool():
    tuning = Tuning.from_env({
        "AUTOMATA_MAX_CONNECTIONS": "40", "AUTOMATA_POOL_SIZE": "8", "AUTOMATA_POOL_TIMEOUT": "2.5",
        "AUTOMATA_CB_FAILURE_THRESHOLD": "3", "AUTOMATA_CB_RECOVERY_TIMEOUT": "45", "AUTOMATA_REQUEST_TIMEOUT": "20",
        "AUTOMATA_LB_STRATEGY": "least_outstanding", "AUTOMATA_LB_TRY_TIMEOUT": "4",
        "AUTOMATA_LB_RETRY_BUDGET": "0.1", "AUTOMATA_LB_HEALTH_INTERVAL": "7"})
    c = tuning.balancer_config()
    assert (c.max_connections, c.pool_size, c.pool_timeout) == (40, 8, 2.5)
    assert (c.failure_threshold, c.recovery_timeout) == (3, 45)
    assert (c.strategy, c.timeout, c.try_timeout, c.retry_ratio, c.health_interval) == (
        "least_outstanding", 20, 4, 0.1, 7)


def test_dns_refresh_comes_from_its_variable():
    tuning = Tuning.from_env({"AUTOMATA_AI_POOL": "dns://ai-headless.automata.svc:8000", "AUTOMATA_LB_REFRESH": "3"})
    assert tuning.ai_balancer().discovery.refresh == 3


@pytest.mark.parametrize("env,variable", [
    ({"AUTOMATA_POOL_SIZE": "-3"}, "AUTOMATA_POOL_SIZE"),
    ({"AUTOMATA_POOL_SIZE": "twenty"}, "AUTOMATA_POOL_SIZE"),
    ({"AUTOMATA_POOL_SIZE": "50", "AUTOMATA_MAX_CONNECTIONS": "10"}, "AUTOMATA_POOL_SIZE"),
    ({"AUTOMATA_MAX_CONNECTIONS": "0"}, "AUTOMATA_MAX_CONNECTIONS"),
    ({"AUTOMATA_POOL_TIMEOUT": "0"}, "AUTOMATA_POOL_TIMEOUT"),
    ({"AUTOMATA_POOL_TIMEOUT": "inf"}, "AUTOMATA_POOL_TIMEOUT"),
    ({"AUTOMATA_CB_FAILURE_THRESHOLD": "1.5"}, "AUTOMATA_CB_FAILURE_THRESHOLD"),
    ({"AUTOMATA_CB_RECOVERY_TIMEOUT": "-1"}, "AUTOMATA_CB_RECOVERY_TIMEOUT"),
    ({"AUTOMATA_TRAFFIC_CLASS": "batch"}, "AUTOMATA_TRAFFIC_CLASS"),
    ({"AUTOMATA_REQUEST_TIMEOUT": "0"}, "AUTOMATA_REQUEST_TIMEOUT"),
    ({"AUTOMATA_REQUEST_TIMEOUT": ""}, "AUTOMATA_REQUEST_TIMEOUT"),
    ({"AUTOMATA_AI_POOL": "ai.internal"}, "AUTOMATA_AI_POOL"),
    ({"AUTOMATA_AI_POOL": "file:///no/such/pool"}, "AUTOMATA_AI_POOL"),
    ({"AUTOMATA_AI_POOL": f"file://{__file__}"}, "AUTOMATA_AI_POOL"),  # a file, but not of host:port lines
    ({"AUTOMATA_LB_STRATEGY": "fastest"}, "AUTOMATA_LB_STRATEGY"),
    ({"AUTOMATA_LB_TRY_TIMEOUT": "90"}, "AUTOMATA_LB_TRY_TIMEOUT"),  # longer than the 60 s call
    ({"AUTOMATA_LB_RETRY_BUDGET": "1.5"}, "AUTOMATA_LB_RETRY_BUDGET"),
    ({"AUTOMATA_LB_HEALTH_INTERVAL": "0"}, "AUTOMATA_LB_HEALTH_INTERVAL"),
    ({"AUTOMATA_LB_REFRESH": "-5"}, "AUTOMATA_LB_REFRESH"),
])
def test_a_bad_value_is_refused_naming_the_variable(env, variable):
    with pytest.raises(InvalidField) as exc:
        Tuning.from_env(env)
    assert exc.value.field == variable


@pytest.mark.parametrize("env,variable", [
    ({"AUTOMATA_POOL_SIZE": "-3"}, "AUTOMATA_POOL_SIZE"),
    ({"AUTOMATA_LB_STRATEGY": "fastest"}, "AUTOMATA_LB_STRATEGY"),
    ({"AUTOMATA_POOL_TIMEOUT": "0"}, "AUTOMATA_POOL_TIMEOUT"),
    ({"AUTOMATA_CB_RECOVERY_TIMEOUT": "0"}, "AUTOMATA_CB_RECOVERY_TIMEOUT"),
])
def test_the_process_refuses_to_start_with_a_bad_value(run_backend, env, variable):
    port = free_port()
    proc = run_backend(port, free_port(), env=env)
    assert proc.returncode == 2
    assert variable in proc.stderr and env[variable] in proc.stderr, proc.stderr
    with socket.socket() as s:  # nothing was started: the port was never taken
        assert s.connect_ex(("127.0.0.1", port)) != 0


# --- changed values change the running process ------------------------------------------

TUNED = {"AUTOMATA_MAX_CONNECTIONS": "3", "AUTOMATA_POOL_SIZE": "2", "AUTOMATA_POOL_TIMEOUT": "0.3",
         "AUTOMATA_CB_FAILURE_THRESHOLD": "2", "AUTOMATA_CB_RECOVERY_TIMEOUT": "1",
         "AUTOMATA_TRAFFIC_CLASS": "api", "AUTOMATA_REQUEST_TIMEOUT": "1.5"}


@pytest.fixture(scope="module")
def tuned(start_backend):
    return start_backend(instance="tuned-1", env=TUNED)


@pytest.fixture(scope="module")
def default(start_backend):
    return start_backend(instance="default-1")


def detailed(p) -> dict:
    return httpx.get(f"{p.url}/health/detailed", timeout=5).json()["components"]


def test_pool_values_change_the_pool(tuned, default):
    pool = detailed(default)["db_pool"]
    assert (pool["max_connections"], pool["pool_size"], pool["idle"], pool["pool_timeout"]) == (100, 20, 20, 30.0)
    pool = detailed(tuned)["db_pool"]
    assert (pool["max_connections"], pool["pool_size"], pool["idle"], pool["pool_timeout"]) == (3, 2, 2, 0.3)


def test_max_connections_and_pool_timeout_bound_the_wait_for_a_connection(tuned):
    async def scenario():
        async with httpx.AsyncClient(base_url=tuned.url, timeout=10) as c:
            holders = [asyncio.ensure_future(c.get("/api/hold", params={"delay": 1})) for _ in range(3)]

            async def all_checked_out():
                return (await c.get("/health/detailed")).json()["components"]["db_pool"]["active"] == 3

            await wait_until_async(all_checked_out, 5)
            r = await c.get("/api/one-more")  # waits pool_timeout (0.3 s), not the default 30 s
            assert (r.status_code, r.json()["error"]) == (503, "database pool exhausted")
            assert [h.status_code for h in await asyncio.gather(*holders)] == [200] * 3

    asyncio.run(scenario())


def test_failure_threshold_and_recovery_timeout_drive_the_breaker(tuned):
    httpx.put(f"{tuned.admin_url}/fault", json={"error_rate": 1.0}, timeout=5)
    try:
        assert [httpx.get(f"{tuned.url}/api/x", timeout=5).status_code for _ in range(2)] == [500, 500]
        breaker = detailed(tuned)["circuit_breaker"]
        assert (breaker["status"], breaker["failure_threshold"], breaker["recovery_timeout"]) == ("open", 2, 1.0)
        r = httpx.get(f"{tuned.url}/api/x", timeout=5)
        assert (r.status_code, r.json()["error"]) == (503, "circuit breaker open")
        httpx.put(f"{tuned.admin_url}/fault", json={"error_rate": 0.0}, timeout=5)
        # After the 1 s recovery timeout (not 300 s) the breaker lets a trial through.
        wait_until(lambda: detailed(tuned)["circuit_breaker"]["status"] == "half_open", 10, interval=0.05)
        assert httpx.get(f"{tuned.url}/api/x", timeout=5).status_code == 200
        assert detailed(tuned)["circuit_breaker"]["status"] == "closed"
    finally:
        httpx.delete(f"{tuned.admin_url}/fault", timeout=5)


def test_traffic_class_limits_the_routes_served(tuned, default):
    assert httpx.get(f"{tuned.url}/api/x", timeout=5).status_code == 200
    r = httpx.get(f"{tuned.url}/ai/x?seconds=0", timeout=5)
    assert r.status_code == 404 and "ai class" in r.json()["error"]
    assert httpx.get(f"{tuned.url}/healthz", timeout=5).status_code == 200  # probes are not traffic
    assert httpx.get(f"{default.url}/ai/x?seconds=0", timeout=5).status_code == 200

    async def handshake():
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(tuned.ws_url):
                pass
        assert exc.value.response.status_code == 404

    asyncio.run(handshake())


def test_request_timeout_ends_a_request_that_runs_too_long(tuned, default):
    r = httpx.get(f"{tuned.url}/api/slow?delay=3", timeout=10)
    assert r.status_code == 504 and "AUTOMATA_REQUEST_TIMEOUT" in r.json()["error"]
    assert httpx.get(f"{tuned.url}/api/quick?delay=0.2", timeout=10).status_code == 200
    assert httpx.get(f"{default.url}/api/slow?delay=2", timeout=10).status_code == 200


def test_in_process_backends_take_tuning_too():
    backend = Backend(Settings("b-1", "stable"), tuning=Tuning(pool_size=4, max_connections=9, failure_threshold=7))
    assert (backend.pool.pool_size, backend.pool.max_connections, backend.breaker.failure_threshold) == (4, 9, 7)
    backend.reset_faults()  # a reset keeps the tuned breaker
    assert backend.breaker.failure_threshold == 7
