"""An API instance calling the AI pool through the client-side balancer
(/api/ai/... -> /ai/... on a pool member), every hop a real process,
configured only through AUTOMATA_* variables."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from automata_backend.app import create_app
from tests.kit import wait_until, wait_until_async
from automata_backend.state import Backend, Settings


def samples(p) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{p.url}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def write_pool(path, processes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{p.address}\n" for p in processes))
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def pool(start_backend):
    return [start_backend(instance=f"ai-{i}") for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def pool_file(pool, tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "ai-pool"
    write_pool(path, pool[:2])
    return path


@pytest.fixture(scope="module")
def api(start_backend, pool_file):
    return start_backend(instance="api-1", env={
        "AUTOMATA_AI_POOL": f"file://{pool_file}", "AUTOMATA_LB_STRATEGY": "round_robin",
        "AUTOMATA_LB_HEALTH_INTERVAL": "0.2",
        "AUTOMATA_CB_FAILURE_THRESHOLD": "2", "AUTOMATA_CB_RECOVERY_TIMEOUT": "1"})


def ai_calls(api, n: int) -> list[dict]:
    bodies = []
    with httpx.Client(base_url=api.url, timeout=10) as c:
        for _ in range(n):
            r = c.get("/api/ai/summarise", params={"seconds": 0, "topic": "graphs"})
            assert r.status_code == 200, r.text
            bodies.append(r.json())
    return bodies


def test_the_api_reaches_the_ai_pool_through_the_balancer(api, pool):
    bodies = ai_calls(api, 6)
    assert {b["instance"] for b in bodies} == {"api-1"}
    # Round robin (AUTOMATA_LB_STRATEGY) over the two endpoints in the file.
    assert Counter(b["ai"]["instance"] for b in bodies) == {"ai-1": 3, "ai-2": 3}
    first = bodies[0]
    assert first["ai"]["path"] == "/ai/summarise" and first["ai"]["query"] == {"seconds": "0", "topic": "graphs"}
    assert all(b["ai_endpoint"] in {p.address for p in pool} and b["ai_status"] == 200 for b in bodies)
    values = samples(api)
    for p in pool[:2]:
        key = ("automata_lb_endpoint_requests_total", (("endpoint", p.address), ("outcome", "success"), ("pool", "ai")))
        assert values[key] >= 3


def test_an_endpoint_added_to_the_file_gets_calls_without_a_restart(api, pool, pool_file):
    write_pool(pool_file, pool)
    try:
        wait_until(lambda: len(httpx.get(f"{api.url}/health/detailed", timeout=5)
                               .json()["components"]["ai_pool"]["endpoints"]) == 3, 10, interval=0.05)
        assert Counter(b["ai"]["instance"] for b in ai_calls(api, 9)) == {"ai-1": 3, "ai-2": 3, "ai-3": 3}
    finally:
        write_pool(pool_file, pool[:2])
        wait_until(lambda: len(httpx.get(f"{api.url}/health/detailed", timeout=5)
                               .json()["components"]["ai_pool"]["endpoints"]) == 2, 10, interval=0.05)


def test_a_failing_pool_opens_the_breakers_and_the_dashboards_gauge_shows_it(api, pool):
    for p in pool:
        httpx.put(f"{p.admin_url}/fault", json={"error_rate": 1.0, "error_status": 503}, timeout=5)
    try:
        r = httpx.get(f"{api.url}/api/ai/x", params={"seconds": 0}, timeout=10)
        assert (r.status_code, r.json()["ai_status"]) == (502, 503)
        httpx.get(f"{api.url}/api/ai/x", params={"seconds": 0}, timeout=10)
        # Two failures each (AUTOMATA_CB_FAILURE_THRESHOLD=2) open both endpoints' breakers.
        values = samples(api)
        assert values[("automata_circuit_breaker_open", ())] == 1
        assert values[("automata_lb_circuit_breaker_open", (("endpoint", pool[0].address), ("pool", "ai")))] == 1
        r = httpx.get(f"{api.url}/api/ai/x", params={"seconds": 0}, timeout=10)
        assert r.status_code == 503 and "no endpoint available" in r.json()["error"]
    finally:
        for p in pool:
            httpx.delete(f"{p.admin_url}/fault", timeout=5)

    def recovered() -> bool:  # after AUTOMATA_CB_RECOVERY_TIMEOUT a trial closes each breaker
        return httpx.get(f"{api.url}/api/ai/x", params={"seconds": 0}, timeout=10).status_code == 200 and \
            samples(api)[("automata_circuit_breaker_open", ())] == 0

    wait_until(recovered, 10, interval=0.05)


def test_sigterm_lets_an_ai_call_in_flight_finish_then_closes_the_pool(start_backend, pool):
    api = start_backend("--grace-period", "5", instance="api-2",
                        env={"AUTOMATA_AI_POOL": ",".join(p.address for p in pool)})

    async def scenario():
        async with httpx.AsyncClient(timeout=10) as c:
            call = asyncio.ensure_future(c.get(f"{api.url}/api/ai/long", params={"seconds": 1}))
            async def call_in_flight() -> bool:  # the AI call and this request
                return (await c.get(f"{api.url}/metrics/performance")).json()["active_connections"] >= 2

            await wait_until_async(call_in_flight, 5)
            api.terminate()
            return await call

    r = asyncio.run(scenario())
    assert r.status_code == 200 and r.json()["ai"]["seconds"] == 1
    assert api.proc.wait(timeout=10) == 0
    events = [json.loads(line) for line in api.output().splitlines() if '"load_balancer"' in line]
    assert [e["msg"] for e in events if e["msg"] in ("closing", "closed")] == ["closing", "closed"]
    assert events[-1]["clean"] is True


def test_without_a_pool_the_route_says_what_to_configure(open_client):
    client = open_client(create_app(Backend(Settings("api-9", "stable"))))
    r = client.get("/api/ai/x")
    assert r.status_code == 503 and "AUTOMATA_AI_POOL" in r.json()["error"]
    assert "ai_pool" not in client.get("/health/detailed").json()["components"]
