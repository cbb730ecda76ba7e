"""The client-side balancer against real backend processes on loopback:
discovery changes, ejection of a killed endpoint and its return through
half-open, active health checks, retries under the budget, timeouts and
graceful shutdown.  The balancer runs in the test process; the endpoints
are `python -m automata_backend` processes whose /ai route answers with
the instance's name."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from automata_backend.load_balancer import (BalancerClosed, BalancerConfig, DeadlineExceeded, FileDiscovery,
                                            LoadBalancer, StaticDiscovery)
from tests.kit import free_port, wait_until_async

AI_ROUTE = "/ai/{path:path}"


@pytest.fixture(scope="module")
def trio(start_backend):
    """Three endpoints for the tests that leave them as they found them."""
    return [start_backend(instance=f"ai-{i}") for i in (1, 2, 3)]


@pytest.fixture
def faults(trio):
    """faults(process, error_rate=1.0): inject; every touched process is reset after the test."""
    touched = []

    def inject(p, **state) -> None:
        touched.append(p)
        httpx.put(f"{p.admin_url}/fault", json=state, timeout=5).raise_for_status()

    yield inject
    for p in touched:
        httpx.delete(f"{p.admin_url}/fault", timeout=5)


@pytest.fixture
def lb_log(caplog):
    """The balancer's log records (logger `load_balancer`) as (msg, fields)."""
    caplog.set_level(logging.INFO, logger="load_balancer")

    def events(msg: str | None = None) -> list[dict]:
        return [{"msg": r.msg, **r.fields} for r in caplog.records
                if r.name == "load_balancer" and (msg is None or r.msg == msg)]

    return events


def server_count(p, status: str = "200") -> float:
    """Requests the endpoint itself answered on /ai with this status."""
    text = httpx.get(f"{p.url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "automata_http_requests_total" and s.labels["route"] == AI_ROUTE
               and s.labels["status"] == status)


def write_pool(path: Path, processes) -> None:
    """Replace the pool file atomically, as a mounted ConfigMap changes."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{p.address}\n" for p in processes))
    os.replace(tmp, path)


async def until(condition, timeout: float = 10.0) -> float:
    """wait_until_async with this module's usual bound."""
    return await wait_until_async(condition, timeout)


async def served_by(lb: LoadBalancer, n: int, **params) -> Counter:
    """n sequential calls; which instance answered each."""
    seen = Counter()
    for _ in range(n):
        r = await lb.request("GET", "/ai/probe", params={"seconds": 0, **params})
        assert r.status_code == 200, r.text
        seen[r.json()["instance"]] += 1
    return seen


def names(lb: LoadBalancer, draining: bool = False) -> set[str]:
    return {e["endpoint"] for e in lb.snapshot() if e["draining"] == draining}


def lb_sample(lb: LoadBalancer, name: str, **labels) -> float:
    value = lb.registry.get_sample_value(name, {"pool": lb.name, **labels})
    return 0.0 if value is None else value


# --- discovery --------------------------------------------------------------------------------

def test_watched_file_adds_an_endpoint_and_drains_a_removed_one(trio, tmp_path):
    a, b, c = trio
    pool = tmp_path / "ai-pool"
    write_pool(pool, [a, b])
    b_before = server_count(b)

    async def scenario():
        lb = LoadBalancer("ai", FileDiscovery(pool, interval=0.05),
                          BalancerConfig(strategy="round_robin", health_interval=None))
        await lb.start()
        try:
            from_b = 0
            first = await served_by(lb, 6)
            assert set(first) == {"ai-1", "ai-2"}
            from_b += first["ai-2"]

            write_pool(pool, [a, b, c])  # no restart: the file is watched
            await until(lambda: c.address in names(lb))
            second = await served_by(lb, 9)
            assert second == {"ai-1": 3, "ai-2": 3, "ai-3": 3}
            from_b += second["ai-2"]

            # One slow call on each endpoint, then b leaves the pool.
            slow = [asyncio.ensure_future(lb.request("GET", "/ai/slow", params={"seconds": 1})) for _ in range(3)]
            await until(lambda: all(e["in_flight"] == 1 for e in lb.snapshot()))
            write_pool(pool, [a, c])
            await until(lambda: b.address in names(lb, draining=True))
            third = await served_by(lb, 10)
            assert set(third) == {"ai-1", "ai-3"}, "a removed endpoint got new calls"

            answers = await asyncio.gather(*slow)
            assert [r.status_code for r in answers] == [200, 200, 200]
            assert "ai-2" in {r.json()["instance"] for r in answers}, "b's in-flight call did not finish"
            from_b += 1
            await until(lambda: b.address not in names(lb) | names(lb, draining=True))
            # Closed: its per-endpoint series are gone, the others' remain.
            assert lb.registry.get_sample_value("automata_lb_endpoint_requests_total",
                                                {"pool": "ai", "endpoint": b.address, "outcome": "success"}) is None
            assert lb_sample(lb, "automata_lb_endpoint_requests_total", endpoint=a.address, outcome="success") > 0
            return from_b
        finally:
            await lb.aclose(5)

    from_b = asyncio.run(scenario())
    # Nothing reached b that the client did not see: no hidden retries or stragglers.
    assert server_count(b) - b_before == from_b


# --- ejection and recovery ----------------------------------------------------------------------

class Load:
    """`workers` callers sending GETs back to back until stopped; every
    outcome is recorded (instance name or the exception)."""

    def __init__(self, lb: LoadBalancer, workers: int = 4) -> None:
        self.lb = lb
        self.outcomes: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        while not self._stop.is_set():
            try:
                r = await self.lb.request("GET", "/ai/load", params={"seconds": 0})
                self.outcomes.append(r.json()["instance"] if r.status_code == 200 else f"status {r.status_code}")
            except Exception as exc:  # noqa: BLE001 - every failure is a result here
                self.failures.append(exc)
            await asyncio.sleep(0)  # yield to the other callers: pacing, not a wait

    def served(self, since: int = 0) -> Counter:
        return Counter(self.outcomes[since:])

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def test_killed_endpoint_is_ejected_and_returns_through_half_open(start_backend, lb_log):
    procs = [start_backend(instance=f"ej-{i}") for i in (1, 2, 3)]
    victim = procs[2]
    config = BalancerConfig(strategy="round_robin", failure_threshold=3, recovery_timeout=0.5,
                            health_interval=None)  # passive ejection only: the breakers do it

    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery(p.address for p in procs), config)
        await lb.start()
        load = Load(lb)
        try:
            await until(lambda: load.served()["ej-3"] >= 5)
            victim.proc.kill()
            victim.proc.wait()
            await until(lambda: any(e["endpoint"] == victim.address and e["breaker"] != "closed"
                                    for e in lb.snapshot()))
            mark = len(load.outcomes)
            await until(lambda: len(load.outcomes) - mark >= 300)
            assert load.failures == [], load.failures[:3]
            assert set(load.served(mark)) <= {"ej-1", "ej-2"}

            start_backend(instance="ej-3", port=victim.port)  # the same address comes back
            await until(lambda: any(e.get("endpoint") == victim.address and e.get("transition") == "half_open->closed"
                                    for e in lb_log("circuit_breaker")))
            back = len(load.outcomes)
            await until(lambda: load.served(back)["ej-3"] >= 5)
        finally:
            await load.stop()
            await lb.aclose(5)
        return load, lb

    load, lb = asyncio.run(scenario())
    assert load.failures == [], f"{len(load.failures)} calls failed, e.g. {load.failures[:3]}"
    assert all(o.startswith("ej-") for o in load.outcomes), Counter(load.outcomes)
    moves = [e["transition"] for e in lb_log("circuit_breaker") if e["endpoint"] == victim.address]
    assert moves[0] == "closed->open" and moves[-1] == "half_open->closed", moves
    assert "open->half_open" in moves
    # The failed tries were absorbed by retries, which the budget paid for.
    retried = sum(lb_sample(lb, "automata_lb_retries_total", reason=r)
                  for r in ("connect_failure", "transport_error", "try_timeout"))
    assert retried >= 3
    assert lb_sample(lb, "automata_lb_retry_budget_exhausted_total") == 0


def test_active_checks_take_out_an_endpoint_whose_healthz_fails_and_bring_it_back(trio, faults, lb_log):
    _a, _b, c = trio
    config = BalancerConfig(strategy="round_robin", health_interval=0.05, unhealthy_threshold=2)

    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery(p.address for p in trio), config)
        await lb.start()
        try:
            # The health fault fails only the probes, never /ai: only the
            # active checks can notice it.
            faults(c, health="fail")
            await until(lambda: any(e["endpoint"] == c.address and not e["healthy"] for e in lb.snapshot()))
            assert set(await served_by(lb, 8)) == {"ai-1", "ai-2"}
            httpx.delete(f"{c.admin_url}/fault", timeout=5)
            await until(lambda: all(e["healthy"] for e in lb.snapshot()))
            assert (await served_by(lb, 9))["ai-3"] == 3
        finally:
            await lb.aclose(5)

    asyncio.run(scenario())
    assert [e["endpoint"] for e in lb_log("endpoint_unhealthy")] == [c.address]
    assert [e["endpoint"] for e in lb_log("endpoint_healthy")] == [c.address]


# --- retries ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio,cap", [(0.2, 60), (2.0, 150)])
def test_a_retry_storm_is_capped_by_the_budget(trio, faults, ratio, cap):
    # Every endpoint answers 503.  50 calls with 3 attempts each could send
    # 150 tries; a 20% budget allows 50 + 10.  The 200% run is the control:
    # the same calls do reach 150 when the budget does not stop them.
    for p in trio:
        faults(p, error_rate=1.0, error_status=503)
    before = sum(server_count(p, "503") for p in trio)
    config = BalancerConfig(strategy="round_robin", max_attempts=3, retry_ratio=ratio, retry_min_per_second=0,
                            failure_threshold=10_000, health_interval=None)

    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery(p.address for p in trio), config)
        await lb.start()
        try:
            statuses = [(await lb.request("GET", "/ai/storm", params={"seconds": 0})).status_code for _ in range(50)]
        finally:
            await lb.aclose(5)
        return statuses, lb

    statuses, lb = asyncio.run(scenario())
    assert statuses == [503] * 50  # the last try's answer, passed on
    tries = sum(server_count(p, "503") for p in trio) - before
    assert 50 < tries <= cap
    if ratio < 1:
        assert lb_sample(lb, "automata_lb_retry_budget_exhausted_total") > 0
    else:
        assert tries == 150


def test_post_is_repeated_only_when_it_never_reached_an_endpoint(trio, faults):
    a = trio[0]
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused

    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery([a.address, dead]),
                          BalancerConfig(strategy="round_robin", health_interval=None))
        await lb.start()
        try:
            # Refused connections are retried whatever the method.
            statuses = [(await lb.request("POST", "/ai/create", params={"seconds": 0}, content=b"{}")).status_code
                        for _ in range(4)]
            refused = lb_sample(lb, "automata_lb_endpoint_requests_total", endpoint=dead, outcome="failure")
        finally:
            await lb.aclose(5)
        # A 503 answer may come after the work was done: not repeated, though
        # two more endpoints (answering 503 as well) were there to try.
        for p in trio:
            faults(p, error_rate=1.0, error_status=503)
        before = sum(server_count(p, "503") for p in trio)
        lb = LoadBalancer("ai", StaticDiscovery(p.address for p in trio), BalancerConfig(health_interval=None))
        await lb.start()
        try:
            answer = await lb.request("POST", "/ai/create", params={"seconds": 0}, content=b"{}")
        finally:
            await lb.aclose(5)
        return statuses, refused, answer.status_code, sum(server_count(p, "503") for p in trio) - before

    statuses, refused, status, tries = asyncio.run(scenario())
    assert statuses == [200] * 4 and refused >= 1
    assert (status, tries) == (503, 1)


def test_per_try_timeout_moves_a_slow_try_elsewhere_and_the_call_timeout_ends_it(trio, faults):
    a, b, _ = trio
    faults(a, latency_ms=3000)

    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery([a.address, b.address]),
                          BalancerConfig(strategy="round_robin", timeout=5, try_timeout=0.3, health_interval=None))
        await lb.start()
        try:
            seen = await served_by(lb, 4)
            timed_out = lb_sample(lb, "automata_lb_retries_total", reason="try_timeout")
        finally:
            await lb.aclose(0)
        faults(b, latency_ms=3000)
        whole = LoadBalancer("ai", StaticDiscovery([a.address, b.address]),
                             BalancerConfig(timeout=0.5, health_interval=None))
        await whole.start()
        try:
            with pytest.raises(DeadlineExceeded):
                await whole.request("GET", "/ai/slow", params={"seconds": 0})
        finally:
            await whole.aclose(0)
        return seen, timed_out

    seen, timed_out = asyncio.run(scenario())
    assert seen == {"ai-2": 4} and timed_out >= 1


# --- shutdown -----------------------------------------------------------------------------------

def test_shutdown_stops_picking_lets_calls_in_flight_finish_and_closes_the_pools(trio, lb_log):
    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery(p.address for p in trio), BalancerConfig(health_interval=0.5))
        await lb.start()
        slow = asyncio.ensure_future(lb.request("GET", "/ai/slow", params={"seconds": 0.5}))
        await until(lambda: lb.in_flight == 1)
        closing = asyncio.ensure_future(lb.aclose(grace=10))
        await until(lambda: lb.pick() is None)
        with pytest.raises(BalancerClosed):
            await lb.request("GET", "/ai/late", params={"seconds": 0})
        assert (await slow).status_code == 200
        assert await closing is True
        assert all(e.client.is_closed for e in lb.endpoints)

        cut = LoadBalancer("ai", StaticDiscovery(p.address for p in trio), BalancerConfig(health_interval=None))
        await cut.start()
        too_slow = asyncio.ensure_future(cut.request("GET", "/ai/slow", params={"seconds": 30}))
        await until(lambda: cut.in_flight == 1)
        assert await cut.aclose(grace=0.2) is False
        with pytest.raises(BalancerClosed):
            await too_slow

    asyncio.run(scenario())
    assert [(e["clean"], e["cut"]) for e in lb_log("closed")] == [(True, 0), (False, 1)]
