"""The client-side balancer's parts on their own: breaker, peak EWMA,
strategies, hash ring, retry budget, discovery and config.  No HTTP here;
test_lb_process.py runs the balancer against real backend processes."""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections import Counter

import pytest

from automata_backend.load_balancer import (CLOSED, HALF_OPEN, OPEN, Address, BalancerConfig, Breaker, ConfigError,
                                            DiscoveryError, DnsDiscovery, Endpoint, FileDiscovery, LoadBalancer,
                                            NoEndpointAvailable, RetryBudget, StaticDiscovery, parse_discovery)
from automata_backend.load_balancer.discovery import getaddrinfo_a
from automata_backend.load_balancer.endpoint import UNMEASURED_PENALTY
from automata_backend.load_balancer.picking import HashRing, LeastOutstanding, PeakEwmaP2C, RoundRobin


def endpoint(port: int, now: float = 0.0, decay: float = 10.0) -> Endpoint:
    return Endpoint(Address("10.0.0.1", port), client=None, breaker=Breaker(5, 300), decay=decay, now=now)


# --- circuit breaker ----------------------------------------------------------------------

def test_breaker_opens_after_threshold_consecutive_failures_and_a_success_resets_the_count():
    moves = []
    b = Breaker(3, 10, on_change=lambda old, new: moves.append(f"{old}->{new}"))
    b.failed(False, 0)
    b.failed(False, 0)
    b.succeeded(False)
    b.failed(False, 0)
    b.failed(False, 0)
    assert b.state == CLOSED
    b.failed(False, 1.0)
    assert b.state == OPEN and moves == ["closed->open"]
    assert not b.allows(10.99) and b.allows(11.0)


def test_half_open_lets_one_trial_through_and_its_result_decides():
    moves = []
    b = Breaker(1, 10, on_change=lambda old, new: moves.append(f"{old}->{new}"))
    b.failed(False, 0)
    assert b.picked(10) is True and b.state == HALF_OPEN
    assert not b.allows(10.5), "a second call while the trial runs"
    b.failed(True, 12)  # the trial failed: open for another recovery_timeout from now
    assert b.state == OPEN and not b.allows(21.9) and b.allows(22)
    assert b.picked(22) is True
    b.succeeded(True)
    assert b.state == CLOSED and b.allows(22)
    assert moves == ["closed->open", "open->half_open", "half_open->open", "open->half_open", "half_open->closed"]


def test_results_of_calls_picked_before_the_breaker_opened_do_not_change_it():
    b = Breaker(1, 10)
    b.failed(False, 0)
    b.succeeded(False)  # a slow call that started while closed
    assert b.state == OPEN
    b.failed(False, 5)  # a late failure does not extend the open period
    assert b.allows(10)


def test_an_abandoned_trial_frees_the_slot_for_the_next_one():
    b = Breaker(1, 10)
    b.failed(False, 0)
    trial = b.picked(10)
    b.abandoned(trial)
    assert b.state == HALF_OPEN and b.allows(10)


# --- peak EWMA --------------------------------------------------------------------------

def test_peak_ewma_jumps_up_at_once_and_comes_down_with_the_decay():
    e = endpoint(1, decay=10.0)
    e.observe(0.010, 0.0)
    e.observe(0.200, 0.1)
    assert e.ewma == 0.200  # the peak is taken as is
    e.observe(0.010, 10.1)  # one decay time later: about 63% of the way down
    assert 0.075 < e.ewma < 0.085


def test_cost_counts_the_queue_and_penalises_an_endpoint_that_never_answered():
    e = endpoint(1)
    assert e.cost(0) == 0.0
    e.inflight = 1
    assert e.cost(0) == UNMEASURED_PENALTY
    e.observe(0.05, 0)
    e.inflight = 3
    assert e.cost(0) == pytest.approx(0.05 * 4)


def test_an_unused_slow_endpoint_becomes_cheap_again_so_it_is_measured_afresh():
    slow, fast = endpoint(1), endpoint(2)
    slow.observe(0.2, 0)
    fast.observe(0.002, 0)
    assert slow.cost(1) > fast.cost(1)
    assert slow.cost(60) < 0.002  # after ~6 decay times without samples


# --- strategies -----------------------------------------------------------------------------

def test_round_robin_takes_each_endpoint_in_turn():
    eps = [endpoint(p) for p in (1, 2, 3)]
    rr = RoundRobin()
    picks = [rr.pick(eps, 0).address.port for _ in range(9)]
    assert Counter(picks) == {1: 3, 2: 3, 3: 3}
    assert all(len(set(picks[i:i + 3])) == 3 for i in range(7))  # a rotation, not just a fair total


def test_least_outstanding_picks_the_least_busy_and_rotates_ties():
    eps = [endpoint(p) for p in (1, 2, 3)]
    lo = LeastOutstanding()
    eps[0].inflight, eps[1].inflight, eps[2].inflight = 4, 1, 2
    assert lo.pick(eps, 0) is eps[1]
    for e in eps:
        e.inflight = 0
    assert Counter(lo.pick(eps, 0).address.port for _ in range(30)) == {1: 10, 2: 10, 3: 10}


def test_p2c_ewma_never_sends_to_a_much_slower_endpoint_when_there_is_a_choice():
    eps = [endpoint(p) for p in (1, 2, 3)]
    eps[0].observe(0.200, 0)
    eps[1].observe(0.002, 0)
    eps[2].observe(0.002, 0)
    p2c = PeakEwmaP2C(random.Random(7))
    picks = Counter(p2c.pick(eps, 0).address.port for _ in range(3000))
    assert picks[1] == 0
    assert min(picks[2], picks[3]) > 1000  # the two fast ones share evenly


def test_p2c_ewma_weighs_latency_by_the_queue():
    slow, fast = endpoint(1), endpoint(2)
    slow.observe(0.010, 0)
    fast.observe(0.002, 0)
    fast.inflight = 9  # 0.002 x 10 > 0.010 x 1
    assert PeakEwmaP2C(random.Random(1)).pick([slow, fast], 0) is slow


def test_hash_ring_keeps_keys_and_moves_only_the_leaving_endpoints_keys():
    eps = [endpoint(p) for p in (1, 2, 3, 4)]
    ring = HashRing(100)
    ring.rebuild(eps)
    keys = [f"user-{i}" for i in range(4000)]
    before = {k: ring.pick(k, eps) for k in keys}
    assert before == {k: ring.pick(k, eps) for k in keys}  # stable
    shares = Counter(e.address.port for e in before.values())
    assert min(shares.values()) > 600, shares  # 1000 each if perfectly even
    ring.rebuild(eps[:3])  # endpoint 4 leaves
    after = {k: ring.pick(k, eps[:3]) for k in keys}
    moved = [k for k in keys if after[k] is not before[k]]
    assert moved and all(before[k] is eps[3] for k in moved)


def test_hash_ring_skips_an_endpoint_that_may_not_take_calls():
    eps = [endpoint(p) for p in (1, 2, 3)]
    ring = HashRing(50)
    ring.rebuild(eps)
    owner = ring.pick("session-9", eps)
    others = [e for e in eps if e is not owner]
    stand_in = ring.pick("session-9", others)
    assert stand_in in others
    assert ring.pick("session-9", eps) is owner  # and the key comes back


# --- retry budget ------------------------------------------------------------------------

def test_retry_budget_allows_a_share_of_recent_calls():
    budget = RetryBudget(ratio=0.2, min_per_second=0, window=10)
    for _ in range(10):
        budget.deposit(100.0)
    assert budget.withdraw(100.5) and budget.withdraw(100.5)
    assert not budget.withdraw(100.5)


def test_retry_budget_forgets_calls_older_than_its_window():
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10)
    for _ in range(10):
        budget.deposit(100.0)
    assert budget.withdraw(100.0)
    assert not budget.withdraw(111.0)  # the 10 calls left the window, and so did the retry


def test_retry_budget_minimum_lets_a_quiet_client_retry():
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, window=10)
    assert sum(budget.withdraw(0.0) for _ in range(10)) == 5


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    ({"strategy": "fastest"}, "strategy"), ({"pool_size": 0}, "pool_size"),
    ({"pool_size": 200}, "pool_size"), ({"max_connections": -1}, "max_connections"),
    ({"pool_timeout": 0}, "pool_timeout"), ({"recovery_timeout": -5}, "recovery_timeout"),
    ({"failure_threshold": 0}, "failure_threshold"), ({"timeout": float("nan")}, "timeout"),
    ({"try_timeout": 0}, "try_timeout"), ({"try_timeout": 90}, "try_timeout"),
    ({"retry_ratio": -0.1}, "retry_ratio"), ({"max_attempts": 0}, "max_attempts"),
    ({"health_interval": 0}, "health_interval"), ({"health_path": "healthz"}, "health_path"),
])
def test_bad_balancer_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as exc:
        BalancerConfig(**kwargs)
    assert exc.value.field == field


# --- discovery ------------------------------------------------------------------------------

def test_discovery_specs_parse_to_their_source(tmp_path):
    pool = tmp_path / "pool"
    pool.write_text("10.0.0.7:8000\n")
    static = parse_discovery("10.0.0.8:8000, 10.0.0.7:8000,[::1]:9000")
    assert isinstance(static, StaticDiscovery)
    assert [str(a) for a in static.addresses] == ["10.0.0.7:8000", "10.0.0.8:8000", "[::1]:9000"]
    dns = parse_discovery("dns://automata-ai-headless.automata.svc.cluster.local:8000", refresh=7)
    assert isinstance(dns, DnsDiscovery) and (dns.port, dns.refresh) == (8000, 7)
    assert isinstance(parse_discovery(f"file://{pool}"), FileDiscovery)


@pytest.mark.parametrize("spec", [
    "", "10.0.0.7", "10.0.0.7:99999", "http://10.0.0.7:8000", "dns://ai", "dns://bad name:80",
    "file://relative/path", "file:///no/such/file", "10.0.0.7:8000/ai",
])
def test_bad_discovery_specs_are_refused(spec):
    with pytest.raises(ConfigError):
        parse_discovery(spec)


def test_file_discovery_sees_edits_and_atomic_replaces_and_keeps_the_last_good_set(tmp_path):
    path = tmp_path / "pool"
    path.write_text("# the AI pool\n10.0.0.1:8000\n10.0.0.2:8000  # second\n\n")
    source = FileDiscovery(path, interval=0.05)

    async def scenario():
        assert [str(a) for a in await source.resolve()] == ["10.0.0.1:8000", "10.0.0.2:8000"]
        assert await source.resolve() is None  # unchanged: nothing to do
        with path.open("a") as f:  # an in-place edit
            f.write("10.0.0.3:8000\n")
        assert len(await source.resolve()) == 3
        tmp = tmp_path / "pool.new"
        tmp.write_text("10.0.0.9:8000\n")
        os.replace(tmp, path)  # how a mounted ConfigMap changes
        assert [str(a) for a in await source.resolve()] == ["10.0.0.9:8000"]
        path.write_text("10.0.0.9:8000\nnot-an-address\n")
        with pytest.raises(DiscoveryError, match="line 2"):
            await source.resolve()

    asyncio.run(scenario())


def test_dns_discovery_resolves_localhost_for_real():
    async def scenario():
        assert "127.0.0.1" in await getaddrinfo_a("localhost", 8000)
        found = await DnsDiscovery("localhost", 8000).resolve()
        assert Address("127.0.0.1", 8000) in found

    asyncio.run(scenario())


def test_dns_discovery_follows_the_records_and_keeps_them_through_a_failed_lookup():
    answers = [["10.0.0.1", "10.0.0.2", "10.0.0.1"], OSError("temporary failure in name resolution"),
               ["10.0.0.2", "10.0.0.3"]]

    async def resolver(name: str, port: int) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def scenario():
        lb = LoadBalancer("ai", DnsDiscovery("ai.example", 8000, ttl=60, resolver=resolver),
                          BalancerConfig(health_interval=None))
        await lb.start()
        names = lambda: [e["endpoint"] for e in lb.snapshot() if not e["draining"]]  # noqa: E731
        assert names() == ["10.0.0.1:8000", "10.0.0.2:8000"]
        await lb.refresh()  # the lookup fails: keep what we had
        assert names() == ["10.0.0.1:8000", "10.0.0.2:8000"]
        await lb.refresh()
        assert names() == ["10.0.0.2:8000", "10.0.0.3:8000"]
        await lb.aclose(0)

    asyncio.run(scenario())


# --- the balancer without traffic ----------------------------------------------------------------

def test_no_endpoint_available_says_why_instead_of_trying():
    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery(["10.0.0.1:8000", "10.0.0.2:8000"]),
                          BalancerConfig(health_interval=None, failure_threshold=1))
        await lb.start()
        for e in lb.endpoints:
            e.breaker.failed(False, e.stamp)
        with pytest.raises(NoEndpointAvailable, match=re.escape("10.0.0.1:8000 open")):
            await lb.request("GET", "/ai/x")
        await lb.aclose(0)

    asyncio.run(scenario())


def test_consistent_hash_strategy_pins_keyed_calls():
    async def scenario():
        lb = LoadBalancer("ai", StaticDiscovery([f"10.0.0.{i}:8000" for i in range(1, 6)]),
                          BalancerConfig(strategy="consistent_hash", health_interval=None))
        await lb.start()
        for key in ("alice", "bob", "carol"):
            assert len({lb.pick(key).name for _ in range(20)}) == 1
        assert len({lb.pick(f"user-{i}").name for i in range(50)}) == 5
        await lb.aclose(0)

    asyncio.run(scenario())
