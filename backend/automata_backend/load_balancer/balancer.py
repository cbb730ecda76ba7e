"""The client-side load balancer: one per upstream pool."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from random import Random
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from .breaker import CLOSED, OPEN, Breaker
from .config import BalancerConfig
from .endpoint import Address, Endpoint
from .errors import (BalancerClosed, DeadlineExceeded, DiscoveryError, LoadBalancerError, NoEndpointAvailable,
                     UpstreamFailed)
from .metrics import BalancerMetrics
from .picking import CONSISTENT_HASH, HashRing, make_strategy
from .retry import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, RetryBudget, never_sent

log = logging.getLogger("load_balancer")
clock = time.monotonic


def _reason(exc: BaseException | None, response: httpx.Response | None) -> str:
    if response is not None:
        return f"status_{response.status_code}"
    if isinstance(exc, TimeoutError):
        return "try_timeout"
    if never_sent(exc):
        return "connect_failure"
    return "transport_error"


class LoadBalancer:
    """Balance HTTP calls over the endpoints a discovery source names.

        lb = LoadBalancer("ai", StaticDiscovery(["10.0.0.7:8000", "10.0.0.8:8000"]))
        await lb.start()
        response = await lb.request("GET", "/ai/answer", params={"seconds": 0})
        await lb.aclose(grace=30)

    `request` picks an endpoint (config.strategy), sends the call on that
    endpoint's pooled connections and returns the httpx.Response (body read).
    A failed try is retried on another endpoint when that is safe (see
    retry.py) and the retry budget allows it; otherwise LoadBalancerError
    subclasses say why no response came.
    """

    def __init__(self, name: str, discovery, config: BalancerConfig | None = None, *,
                 registry: CollectorRegistry | None = None, rng: Random | None = None) -> None:
        self.name = name
        self.discovery = discovery
        self.config = config = config or BalancerConfig()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = BalancerMetrics(name, self.registry)
        self.budget = RetryBudget(config.retry_ratio, config.retry_min_per_second, config.retry_window)
        self._strategy = make_strategy(config.strategy, rng)
        self._ring = HashRing(config.hash_replicas) if config.strategy == CONSISTENT_HASH else None
        self._members: list[Endpoint] = []  # may be picked (not draining)
        self._known: dict[Address, Endpoint] = {}  # members + draining ones
        self._inflight = 0
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._retiring: set[asyncio.Task] = set()
        self._health_client: httpx.AsyncClient | None = None
        # Endpoints speak plain HTTP; one shared context still saves each new
        # endpoint's client from loading the CA bundle (~15 ms) again.
        self._tls = ssl.create_default_context()
        self._started = self._closing = self._closed = False
        self._budget_dry = False
        self._discovery_error: str | None = None
        m = self.metrics
        m.count_endpoints("available", lambda: sum(e.pickable(clock()) for e in self._members))
        m.count_endpoints("unhealthy", lambda: sum(not e.healthy for e in self._members))
        m.count_endpoints("ejected", lambda: sum(e.breaker.state != CLOSED for e in self._members))
        m.count_endpoints("draining", lambda: len(self._known) - len(self._members))

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the endpoints once, then keep discovery and health checks
        running.  A source that cannot answer yet (DNS not ready) is not
        fatal: the pool starts empty and fills on the next refresh."""
        if self._started:
            return
        self._started = True
        self._health_client = httpx.AsyncClient(timeout=self.config.health_timeout, trust_env=False, verify=self._tls)
        await self.refresh()
        if self.discovery.refresh is not None:
            self._tasks.append(asyncio.ensure_future(self._discover_forever()))
        if self.config.health_interval is not None:
            self._tasks.append(asyncio.ensure_future(self._check_forever()))
        self._event("started", discovery=self.discovery.description, strategy=self.config.strategy,
                    endpoints=[e.name for e in self._members])

    async def aclose(self, grace: float = 30.0) -> bool:
        """Graceful shutdown: stop picking at once, let calls in flight finish
        for up to `grace` seconds, then close every connection pool (which
        cuts what still runs).  True if nothing had to be cut."""
        if self._closed:
            return True
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waiting = self._inflight
        self._event("closing", in_flight=waiting, grace_period=round(grace, 3))
        if self._inflight:
            try:
                async with asyncio.timeout(grace):
                    while self._inflight:
                        self._idle.clear()
                        await self._idle.wait()
            except TimeoutError:
                pass
        cut = self._inflight
        await asyncio.gather(*(e.client.aclose() for e in self._known.values()), return_exceptions=True)
        if self._health_client is not None:
            await self._health_client.aclose()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        self._closed = True
        self._event("closed", clean=cut == 0, finished=waiting - cut, cut=cut,
                    level=logging.INFO if cut == 0 else logging.WARNING)
        return cut == 0

    # --- membership ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask the discovery source once and apply the difference."""
        try:
            found = await self.discovery.resolve()
        except DiscoveryError as exc:
            if str(exc) != self._discovery_error:  # once per distinct problem, not every poll
                self._event("discovery_failed", level=logging.WARNING, error=str(exc),
                            keeping=[e.name for e in self._members])
            self._discovery_error = str(exc)
            return
        if self._discovery_error is not None:
            self._event("discovery_recovered")
            self._discovery_error = None
        if found is not None:
            self._apply(found)

    def _apply(self, addresses: list[Address]) -> None:
        if self._closing:
            return
        wanted = set(addresses)
        changed = False
        now = clock()
        for address in sorted(wanted):
            e = self._known.get(address)
            if e is None:
                e = self._new_endpoint(address, now)
                self._known[address] = e
                self._members.append(e)
                self._event("endpoint_added", endpoint=e.name)
                changed = True
            elif e.removing:
                e.removing = False
                self._members.append(e)
                self._event("endpoint_added", endpoint=e.name, revived=True)
                changed = True
        for e in [e for e in self._members if e.address not in wanted]:
            e.removing = True
            self._members.remove(e)
            self._event("endpoint_removed", endpoint=e.name, in_flight=e.inflight)
            changed = True
            if not e.inflight:
                self._retire(e)
        if changed and self._ring is not None:
            self._ring.rebuild(self._members)

    def _new_endpoint(self, address: Address, now: float) -> Endpoint:
        cfg = self.config
        client = httpx.AsyncClient(
            base_url=address.url, trust_env=False, verify=self._tls,
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.pool_size),
            timeout=httpx.Timeout(cfg.per_try, pool=cfg.pool_timeout))
        name = str(address)
        breaker = Breaker(cfg.failure_threshold, cfg.recovery_timeout,
                          on_change=lambda old, new: self._breaker_moved(name, old, new))
        e = Endpoint(address, client, breaker, cfg.ewma_decay, now)
        self.metrics.bind(e)
        return e

    def _retire(self, e: Endpoint) -> None:
        """A removed endpoint's last call has finished: close its pool."""
        async def close() -> None:
            await e.client.aclose()
            if self._known.get(e.address) is e and e.removing:
                del self._known[e.address]
                self.metrics.unbind(e)
                self._event("endpoint_closed", endpoint=e.name)

        task = asyncio.ensure_future(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.discovery.refresh)
            await self.refresh()

    # --- health -------------------------------------------------------------------------

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._check(e) for e in list(self._members)))
            await asyncio.sleep(self.config.health_interval)

    async def _check(self, e: Endpoint) -> None:
        cfg = self.config
        try:
            r = await self._health_client.get(e.address.url + cfg.health_path)
            ok, detail = r.status_code == 200, f"status {r.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}".rstrip(": ")
        if ok:
            e.check_failures = 0
            e.check_successes += 1
            if not e.healthy and e.check_successes >= cfg.healthy_threshold:
                e.healthy = True
                self._event("endpoint_healthy", endpoint=e.name)
        else:
            e.check_successes = 0
            e.check_failures += 1
            if e.healthy and e.check_failures >= cfg.unhealthy_threshold:
                e.healthy = False
                self._event("endpoint_unhealthy", level=logging.WARNING, endpoint=e.name, check=detail)

    def _breaker_moved(self, name: str, old: str, new: str) -> None:
        self._event("circuit_breaker", level=logging.WARNING if new == OPEN else logging.INFO,
                    endpoint=name, transition=f"{old}->{new}", state=new)

    # --- picking and calling ------------------------------------------------------------

    def pick(self, key: str | None = None, exclude: tuple | list = ()) -> Endpoint | None:
        """The endpoint the next call would go to (None: nothing available)."""
        if self._closing:
            return None
        now = clock()
        candidates = [e for e in self._members
                      if e.healthy and (e.breaker.state == CLOSED or e.breaker.allows(now)) and e not in exclude]
        if not candidates:
            return None
        if key is not None and self._ring is not None:
            return self._ring.pick(key, frozenset(candidates))
        return self._strategy.pick(candidates, now)

    async def request(self, method: str, path: str, *, params: Any = None, headers: Mapping[str, str] | None = None,
                      content: bytes | None = None, key: str | None = None, idempotent: bool | None = None,
                      timeout: float | None = None) -> httpx.Response:
        """Send one call.  `key` pins it to an endpoint under consistent_hash;
        `idempotent` overrides what the method says; `timeout` the config's
        whole-call budget.  Returns the response of the last try (5xx
        included, when no retry was possible)."""
        if self._closing:
            raise BalancerClosed(f"pool {self.name} is shutting down")
        if not self._started:
            raise LoadBalancerError(f"pool {self.name} is not started")
        cfg = self.config
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        now = clock()
        deadline = now + (cfg.timeout if timeout is None else timeout)
        self.budget.deposit(now)
        tried: list[Endpoint] = []
        response: httpx.Response | None = None
        error: BaseException | None = None
        for attempt in range(cfg.max_attempts):
            e = self.pick(key, tried)
            if e is None:
                if self._closing:
                    raise BalancerClosed(f"pool {self.name} is shutting down")
                if not tried:
                    self.metrics.calls.labels(self.name, "no_endpoint").inc()
                    raise NoEndpointAvailable(self._why_none())
                break  # every endpoint has been tried
            remaining = deadline - now
            if remaining <= 0:
                break
            if attempt:
                if not self.budget.withdraw(now):
                    self.metrics.budget_exhausted.labels(self.name).inc()
                    if not self._budget_dry:
                        self._budget_dry = True
                        self._event("retry_budget_exhausted", level=logging.WARNING,
                                    ratio=cfg.retry_ratio, window=cfg.retry_window)
                    break
                self._budget_dry = False
                self.metrics.retries.labels(self.name, _reason(error, response)).inc()
            tried.append(e)
            per_try = min(cfg.per_try, remaining)
            response, error = await self._try(e, method, path, params, headers, content, per_try)
            now = clock()
            if error is None:
                if response.status_code not in RETRYABLE_STATUSES or not idempotent:
                    self.metrics.calls.labels(self.name, "answered").inc()
                    return response
            elif not (idempotent or never_sent(error)):
                break  # it may have reached the endpoint: not ours to repeat
        if error is None and response is not None:
            self.metrics.calls.labels(self.name, "answered").inc()
            return response
        self.metrics.calls.labels(self.name, "failed").inc()
        if now >= deadline:
            budget = cfg.timeout if timeout is None else timeout
            raise DeadlineExceeded(f"pool {self.name}: no answer within {budget} s ({len(tried)} tries)") from error
        if error is None:
            raise DeadlineExceeded(f"pool {self.name}: the call's timeout ran out before a try")
        if self._closing:
            raise BalancerClosed(f"pool {self.name} shut down during the call") from error
        raise UpstreamFailed(f"pool {self.name}: {tried[-1].name}: {_reason(error, None)}: "
                             f"{type(error).__name__} {error}".rstrip()) from error

    async def _try(self, e: Endpoint, method: str, path: str, params, headers, content,
                   budget: float) -> tuple[httpx.Response | None, BaseException | None]:
        started = clock()
        trial = self._begin(e, started)
        decided = False
        try:
            try:
                async with asyncio.timeout(budget):
                    response = await e.client.request(method, path, params=params, headers=headers, content=content)
            except (httpx.TransportError, TimeoutError) as exc:
                self._settle(e, trial, started, None)
                decided = True
                return None, exc
            self._settle(e, trial, started, response.status_code)
            decided = True
            return response, None
        finally:
            self._end(e, trial, decided)

    # The bookkeeping around one try, apart from the I/O, so the benchmark
    # can time exactly what every call pays.

    def _begin(self, e: Endpoint, now: float) -> bool:
        trial = e.breaker.picked(now) if e.breaker.state != CLOSED else False
        e.inflight += 1
        self._inflight += 1
        return trial

    def _settle(self, e: Endpoint, trial: bool, started: float, status: int | None) -> None:
        """Record a try's verdict: no answer or a 5xx is a failure."""
        now = clock()
        took = now - started
        if status is None or status >= 500:
            e.breaker.failed(trial, now)
            e.children["failure" if status is None else "error"].inc()
        else:
            e.breaker.succeeded(trial)
            e.children["success"].inc()
        e.observe(took, now)
        e.children["duration"].observe(took)

    def _end(self, e: Endpoint, trial: bool, decided: bool) -> None:
        if not decided:  # cancelled: no verdict
            e.breaker.abandoned(trial)
        e.inflight -= 1
        self._inflight -= 1
        if e.removing and not e.inflight:
            self._retire(e)
        if not self._inflight:
            self._idle.set()

    # --- introspection ------------------------------------------------------------------

    def _why_none(self) -> str:
        if not self._members:
            return f"pool {self.name}: no endpoints known ({self.discovery.description})"
        states = ", ".join(f"{e.name} {'unhealthy' if not e.healthy else e.breaker.state}" for e in self._members)
        return f"pool {self.name}: no endpoint available ({states})"

    def any_breaker_open(self) -> bool:
        return any(e.breaker.state != CLOSED for e in self._known.values())

    def snapshot(self) -> list[dict]:
        """Every known endpoint's state, for /health/detailed and tests."""
        return [{"endpoint": e.name, "healthy": e.healthy, "breaker": e.breaker.state,
                 "draining": e.removing, "in_flight": e.inflight, "latency_ewma": round(e.ewma, 6)}
                for e in sorted(self._known.values(), key=lambda e: e.address)]

    @property
    def in_flight(self) -> int:
        return self._inflight

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every known endpoint, draining ones included."""
        return tuple(self._known.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def _event(self, msg: str, level: int = logging.INFO, **fields) -> None:
        log.log(level, msg, extra={"fields": {"pool": self.name, **fields}})
