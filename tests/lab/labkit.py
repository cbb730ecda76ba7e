"""Shared helpers for the lab tests (importable by name from any test module):
the lab's paths, node() for a testinfra host, wait_until(), fresh client
addresses, the load generator, and run_playbook().

`conftest` is not importable reliably when several test folders each have
one, so constants and helpers live here and conftest.py only holds fixtures.
What only NGINX or only HAProxy tests need is in nginx_lab.py and
haproxy_lab.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
import testinfra
import yaml
# The asyncio client over TLS.  The threaded sync client reads the same SSL
# object from a background thread while the caller writes: here about one
# TLS WebSocket handshake in 300 stalled for 10 s with it (never with
# asyncio's single-threaded TLS, measured on 400 each against edge-1).
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from automata_lb import backend_changes, canary, edge, inventory, targets
from automata_lb.targets import LAB_INVENTORY
from tests.kit import PlaybookRun, ansible_playbook, wait_until

__all__ = ["ansible_playbook", "wait_until"]  # re-exported: lab tests import every helper from here

ROOT = Path(__file__).resolve().parents[2]
LAB_JSON = ROOT / ".lab" / "lab.json"
# The running lab's own copy of inventories/lab.  Before `make lab` made it,
# the one it will be copied from: modules build host lists and expectations
# as they are collected, and conftest's `lab`, not a missing file, says that
# the lab is not up (and never lets a test run on the tracked copy).
RUNNING_INVENTORY = LAB_INVENTORY / "hosts.yml"
INVENTORY = RUNNING_INVENTORY if RUNNING_INVENTORY.exists() else ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOK = ROOT / "playbooks" / "edge.yml"

# testinfra's ansible backend calls `ansible-inventory` and `ansible` from
# PATH: make the ones next to this interpreter (the .venv) win, so the suite
# works without activating the virtualenv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# testinfra host spec for modules that use the `host` fixture:
#   testinfra_hosts = [EDGE_HOSTS]
EDGE_HOSTS = f"ansible://edge?ansible_inventory={INVENTORY}"


def node(name: str):
    """testinfra host for one lab node, over the same SSH Ansible uses."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


# --- Ansible ------------------------------------------------------------------------

def run_playbook(extra_vars: dict | None = None, *, limit: str | None = None,
                 playbook: Path = PLAYBOOK, args: list[str] | None = None) -> PlaybookRun:
    """Run a playbook on the lab inventory the way a user would; the counts
    come from Ansible's own per-host stats."""
    return ansible_playbook(playbook, INVENTORY, extra_vars, limit=limit, args=args)


@contextmanager
def host_vars(per_host: dict[str, dict], inventories: tuple[Path, ...] = (INVENTORY.parent,)) -> Iterator[None]:
    """Each named node's own variables, the way an operator gives one node
    other values: a host_vars file in each inventory, gone afterwards."""
    files = [(inventory / "host_vars" / f"{name}.yml", values)
             for inventory in inventories for name, values in per_host.items()]
    try:
        for path, values in files:
            path.parent.mkdir(exist_ok=True)
            path.write_text(yaml.safe_dump(values))
        yield
    finally:
        for path, _ in files:
            path.unlink(missing_ok=True)


def put_back_the_inventorys_configs(target=None) -> dict[str, dict]:
    """Every node's NGINX and HAProxy configuration as the inventory renders
    it (the lab's, or `target`'s), installed where it differs (checked, then
    reloaded), without a converge: what `automata-lb` does after a change.
    {node: {lb: how}}, how being "unchanged" where the node already ran it."""
    return edge.apply_inventory(target or targets.lab(), lambda _: None)


def disagreements_with_the_inventory(long_form: bool, target=None, args: list[str] | None = None) -> list[str]:
    """What the nodes run that the inventory (the lab's, or `target`'s) does
    not say, after changes made without a converge; [] when they agree.
    Full form (make test-long): a converge, which must change nothing.
    Short form: the roles' own templates render every node's NGINX and
    HAProxy files from the inventory (playbooks/render.yml) and each node
    must already run them, which is what that converge compares for the
    load balancers."""
    if long_form:
        result = ansible_playbook(PLAYBOOK, target.inventory if target else INVENTORY, args=args)
        if result.rc != 0:
            return [f"the converge failed: {result.output[-3000:]}"]
        return [f"{host}: {n} changed: {result.changed_tasks.get(host)}" for host, n in result.changed.items() if n]
    return [f"{name}: {lb} {how}" for name, answer in put_back_the_inventorys_configs(target).items()
            for lb, how in answer.items() if how != "unchanged"]


LAB_GROUP_VARS = INVENTORY.parent / "group_vars" / "edge" / "main.yml"


def lab_group_vars() -> dict:
    """The lab inventory's edge variables (plain data, no templating)."""
    import yaml
    return yaml.safe_load(LAB_GROUP_VARS.read_text())


def lab_policy_overrides() -> dict:
    """The lab inventory's traffic_policy_overrides."""
    return lab_group_vars().get("traffic_policy_overrides") or {}


def lab_policy(extra: dict | None = None):
    """The traffic policy the lab's load balancers run (traffic/policy.yml plus
    the lab's overrides, plus `extra`), for the numbers a test checks."""
    from traffic import model
    return model.load(overrides=model.deep_merge(lab_policy_overrides(), extra or {}))


# --- changes the CLI makes -------------------------------------------------------------

@contextmanager
def backends_put_back(target, abort: Callable[[], object]) -> Iterator:
    """Leaves the nodes and `target`'s inventory as they were, whatever the
    block did: its instances and their releases, the canary weight on both
    load balancers, the inventory's text.  A rollout still open (an earlier
    test's, or the block's) is finished by `abort` (canary-abort)."""
    def close_open_rollout() -> None:
        if (r := canary.load(target.name)) and r.phase not in canary.FINISHED:
            abort()

    close_open_rollout()
    variables = inventory.var_file(target.inventory, "edge_backends")
    original, before = variables.read_text(), backend_changes.current(target)
    try:
        yield target
    finally:
        close_open_rollout()
        variables.write_text(original)
        backend_changes.reconcile(target, before, lambda _: None)
        backend_changes.EdgeCanary(target, lambda _: None).set_weight(before.canary_share)
        variables.write_text(original)  # set_weight may have written the share the policy already has


def rollout_step_windows(rollout) -> list[tuple[int, float, float]]:
    """(weight, start, end) of each weight a progressive rollout held, from
    its events; the first 2 s after a change are left out (NGINX's new
    workers start)."""
    changes = [(e["weight"], e["time"]) for e in rollout.events if e["what"] == "weight"]
    ends = [t for _, t in changes[1:]] + [time.time()]
    return [(w, t + 2, end) for (w, t), end in zip(changes, ends, strict=True) if end - t > 6]


def canary_class_loads(edge: dict, ca_cert: str, max_seconds: float) -> dict[str, LoadGenerator]:
    """Steady canary-class requests through each load balancer of `edge`
    ({"nginx": ..., "haproxy": ...}), not yet started."""
    return {lb: LoadGenerator(edge["endpoints"][endpoint], ca_cert, ClientIPs(), http_workers=2, websockets=0,
                              path="/api/canary", max_seconds=max_seconds)
            for lb, endpoint in (("nginx", "nginx_https"), ("haproxy", "haproxy_http"))}


# --- backends -----------------------------------------------------------------------

def requests_in_flight(backends: list[dict]) -> int:
    """HTTP requests the lab backends are working on now, from each one's
    /metrics/performance (active_connections counts requests in flight plus
    open WebSockets, this request among them).  A backend that does not
    answer counts none."""
    total = 0
    for backend in backends:
        try:
            perf = httpx.get(f"{backend['endpoints']['app']}/metrics/performance", timeout=5).json()
        except httpx.HTTPError:
            continue
        total += perf["active_connections"] - perf["websocket_connections"] - 1
    return total


def wait_for_requests_in_flight(backends: list[dict], count: int, timeout: float = 5) -> float:
    """Wait until the backends hold `count` requests in flight on two polls in
    a row, so a health check or a scrape passing through is not taken for one."""
    polls: list[bool] = []

    def held() -> bool:
        polls.append(requests_in_flight(backends) >= count)
        return polls[-2:] == [True, True]

    return wait_until(held, timeout, interval=0.05, what=f"{count} requests in flight on the lab backends")


# --- clients ------------------------------------------------------------------------

def tls_context(ca_cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_cert)


def ws_url(https_url: str, path: str = "/ws") -> str:
    return https_url.replace("https://", "wss://", 1) + path


class ClientIPs:
    """Fresh fake client addresses, each in its own /24 (ip_hash hashes the /24).

    Taken from 198.18.0.0/15 (RFC 2544, benchmarking): never a real client.
    The start is random so a rerun within a few seconds does not meet the
    limit state a previous run left in NGINX's zones.
    """

    def __init__(self) -> None:
        self._next = itertools.count(random.randrange(0, 400))
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            n = next(self._next) % 512
        return f"198.{18 + n // 256}.{n % 256}.7"


# --- load ---------------------------------------------------------------------------

IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")


def _new_connection_interval() -> float:
    """A third of HAProxy's per-client connection rate (the role's default)."""
    import yaml
    defaults = yaml.safe_load((ROOT / "roles/haproxy_lb/defaults/main.yml").read_text())
    period = float(str(defaults["haproxy_lb_client_connection_rate_period"]).removesuffix("s"))
    return 3 * period / defaults["haproxy_lb_client_max_connection_rate"]


NEW_CONNECTION_INTERVAL = _new_connection_interval()


class Outcome(NamedTuple):
    at: float          # time.time() when answered (or when it failed)
    instance: str      # X-Backend-Instance, "" when none
    status: str        # the HTTP status, or the exception's name
    request_id: str    # the X-Request-ID sent (the access log's request_id)
    seconds: float     # how long it took, a resend included


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    # Idempotent requests resent once because the connection closed before
    # any answer (a reload closing idle keep-alive connections).
    resent_after_close: int = 0
    ws_messages: int = 0
    ws_failures: list[str] = field(default_factory=list)
    # Every HTTP request, in the order answered.
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Outcome]:
        """The requests answered in [start, end) (time.time() values)."""
        return [o for o in self.outcomes if start <= o.at < end]


class LoadGenerator:
    """Steady requests plus long-lived WebSockets against one load balancer,
    every request's outcome recorded (`report.outcomes`).

    HTTP workers reuse keepalive connections (what browsers do);
    `new_connection_workers` open a new connection per request, so a reload
    is met on its listening socket too.  Each request carries a fresh client
    address and an X-Request-ID starting with `marker` (to find it in an
    access log).  Each WebSocket sends a message every 0.2 s and expects its
    echo from the instance that greeted it.  Everything stops by itself
    after `max_seconds`, whatever the caller does.

    `ips` is a ClientIPs, or any function that returns a fresh address (a
    module with its own range of client addresses).  `resend_after_close`:
    resend an idempotent request once when its connection closed before any
    answer (what reload tests allow); off, that is a failure.
    """

    def __init__(self, base_url: str, ca_cert: str, ips: ClientIPs | Callable[[], str], *,
                 http_workers: int = 3, websockets: int = 3, new_connection_workers: int = 0,
                 path: str = "/api/load", method: str = "GET", max_seconds: float = 120.0,
                 timeout: float = 10.0, interval: float = 0.02, resend_after_close: bool = True) -> None:
        self.base_url, self.ca_cert, self.path = base_url, ca_cert, path
        self.client_ip: Callable[[], str] = ips.take if isinstance(ips, ClientIPs) else ips
        self.method, self.timeout, self.interval = method, timeout, interval
        self.resend_after_close = resend_after_close
        self.http_workers, self.websockets = http_workers, websockets
        self.new_connection_workers = new_connection_workers
        self.marker = f"load-{uuid.uuid4().hex[:12]}"
        self.deadline = time.monotonic() + max_seconds
        self.report = LoadReport()
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ws_ready = threading.Barrier(websockets + 1) if websockets else None

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def answered_since(self, start: float) -> int:
        """Requests answered (whatever the answer) since time.time() `start`."""
        with self._lock:
            return len(self.report.between(start, float("inf")))

    def wait_for_answers(self, count: int, since: float = 0.0, timeout: float = 30.0) -> float:
        """Wait until `count` requests were answered after `since` (time.time()):
        the load is running, or running on what a change just started."""
        return wait_until(lambda: self.answered_since(since) >= count, timeout, interval=0.05,
                          what=f"{count} requests answered by {self.base_url}")

    def _send(self, client: httpx.Client) -> tuple[Outcome, str | None, bool]:
        # A new client address per request keeps the load under the
        # per-IP rate limit, which is not what this load measures.
        request_id = f"{self.marker}-{next(self._ids):06d}"
        headers = {"x-forwarded-for": self.client_ip(), "x-request-id": request_id}
        retried = False
        sent = time.monotonic()
        try:
            try:
                r = client.request(self.method, self.path, headers=headers)
            except httpx.RemoteProtocolError:
                # A reload closes idle keep-alive connections; one that
                # closes just as a request goes out gets no answer.
                # Browsers and HTTP libraries resend an idempotent
                # request then (RFC 9110, 9.2.2); so does this client,
                # and the report counts it.  A POST is not resent.
                if not self.resend_after_close or self.method not in IDEMPOTENT:
                    raise
                retried = True
                r = client.request(self.method, self.path, headers=headers)
            problem = None if r.status_code == 200 else f"HTTP {r.status_code}"
            outcome = Outcome(time.time(), r.headers.get("x-backend-instance", ""), str(r.status_code), request_id,
                              time.monotonic() - sent)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            outcome = Outcome(time.time(), "", type(exc).__name__, request_id, time.monotonic() - sent)
        return outcome, problem, retried

    def _http_worker(self, keep_alive: bool = True) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        # The pacing interval is the input here, not a wait for a state.  A
        # worker that opens a connection per request stays at a third of the
        # per-client connection rate HAProxy allows.
        interval = self.interval if keep_alive else NEW_CONNECTION_INTERVAL
        with httpx.Client(base_url=self.base_url, verify=tls_context(self.ca_cert), timeout=self.timeout,
                          limits=limits) as client:
            while self._running():
                outcome, problem, retried = self._send(client)
                with self._lock:
                    self.report.requests += 1
                    self.report.outcomes.append(outcome)
                    self.report.resent_after_close += retried
                    if problem:
                        self.report.failures.append(problem)
                time.sleep(interval)

    def _ws_session(self, n: int) -> None:
        asyncio.run(self._ws_session_async(n))

    async def _ws_session_async(self, n: int) -> None:
        # asyncio's client, not the threaded sync one: see the ws_connect import.
        try:
            async with ws_connect(ws_url(self.base_url), ssl=tls_context(self.ca_cert),
                                  additional_headers={"x-forwarded-for": self.client_ip()},
                                  open_timeout=10) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                await asyncio.to_thread(self._ws_ready.wait, timeout=15)
                i = 0
                while self._running():
                    await ws.send(f"{n}-{i}")
                    echo = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if echo.get("data") != f"{n}-{i}" or echo.get("instance") != hello["instance"]:
                        raise AssertionError(f"unexpected echo {echo} after hello {hello}")
                    with self._lock:
                        self.report.ws_messages += 1
                    i += 1
                    await asyncio.sleep(0.2)
        except Exception as exc:  # noqa: BLE001 - every way a session can end early is a dropped WebSocket
            with self._lock:
                self.report.ws_failures.append(f"websocket {n}: {type(exc).__name__}: {exc}")
            if self._ws_ready and not self._ws_ready.broken:
                self._ws_ready.abort()

    def __enter__(self) -> LoadGenerator:
        targets = [self._http_worker] * self.http_workers
        targets += [lambda: self._http_worker(keep_alive=False)] * self.new_connection_workers
        targets += [lambda n=n: self._ws_session(n) for n in range(self.websockets)]
        self._threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for t in self._threads:
            t.start()
        if self._ws_ready:
            # Only measure once every WebSocket is open.
            self._ws_ready.wait(timeout=15)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)


class WebSocketWatch:
    """WebSockets held open through NGINX; records how each one ended."""

    def __init__(self, base_url: str, ca_cert: str, ips: ClientIPs, count: int = 4, max_seconds: float = 600) -> None:
        self.base_url, self.ca_cert, self.ips, self.count = base_url, ca_cert, ips, count
        self.deadline = time.monotonic() + max_seconds
        self.ended: list[tuple[str, int | None]] = []   # (instance, close code)
        self.echoes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _session(self, n: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            instance = "?"
            try:
                async with ws_connect(ws_url(self.base_url), ssl=tls_context(self.ca_cert), open_timeout=10,
                                      additional_headers={"x-forwarded-for": self.ips.take()}) as ws:
                    instance = json.loads(await asyncio.wait_for(ws.recv(), 10))["instance"]
                    while not self._stop.is_set() and time.monotonic() < self.deadline:
                        await ws.send(f"{n}")
                        while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("data") != f"{n}":
                            pass
                        self.echoes += 1
                        await asyncio.sleep(0.3)  # pacing: a message every 0.3 s
                    return
            except ConnectionClosed as closed:
                self.ended.append((instance, closed.rcvd.code if closed.rcvd else None))
            except Exception as exc:  # noqa: BLE001 - a failed handshake or a stalled echo is a failure too
                self.ended.append((instance, f"{type(exc).__name__}: {exc}"))

    async def _run(self) -> None:
        await asyncio.gather(*(self._session(n) for n in range(self.count)))

    def __enter__(self) -> WebSocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
