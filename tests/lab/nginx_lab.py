"""Helpers for the NGINX lab tests: clients, fake client addresses, load.

The test machine reaches edge-1 through Podman's published ports, so NGINX
sees every test connection coming from the lab gateway (10.77.7.1).  The lab
inventory trusts that gateway as the proxy in front of the edge (the traffic
policy's `trusted_proxies`), which lets a test act as many distinct clients by
sending X-Forwarded-For: each test takes fresh addresses from `ClientIPs`, so
the per-IP rate and connection limits of one test never leak into another.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import testinfra
import yaml
# The asyncio client over TLS.  The threaded sync client reads the same SSL
# object from a background thread while the caller writes: here about one
# TLS WebSocket handshake in 300 stalled for 10 s with it (never with
# asyncio's single-threaded TLS, measured on 400 each against edge-1).
from websockets.asyncio.client import connect as ws_connect

from labkit import INVENTORY

# The role's defaults, for the numbers a test checks (rates, limits, ports):
# plain data, no templating needed.
DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/nginx_lb/defaults/main.yml").read_text())
ACCESS_LOG = "/var/log/nginx/access.log"
NGINX_CONF = "/etc/nginx/nginx.conf"


def node(name: str):
    """testinfra host for one edge node, over the same SSH Ansible uses."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


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


def wait_for(predicate, timeout: float, interval: float = 0.3) -> None:
    """Poll until predicate() is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f}s")
        time.sleep(interval)


def tls_context(ca_cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_cert)


@pytest.fixture(scope="session")
def trusted_gateway(lab, edge, ca_cert) -> None:
    """Fail early and clearly if the lab inventory does not trust the gateway."""
    echo = httpx.get(f"{edge['endpoints']['nginx_https']}/api/trust", headers={"x-forwarded-for": "198.51.100.1"},
                     verify=tls_context(ca_cert), timeout=10).json()
    if echo["headers"]["x-real-ip"] != "198.51.100.1":
        pytest.fail(f"edge-1 does not trust the lab gateway {lab['network']['gateway']}: the lab inventory "
                    f"needs traffic_policy_overrides: {{trusted_proxies: [{lab['network']['gateway']}/32]}} (group_vars/edge)")


@pytest.fixture(scope="module")
def ips() -> ClientIPs:
    """Distinct client addresses, announced through the trusted gateway."""
    return ClientIPs()


@pytest.fixture(scope="module")
def https(edge, ca_cert):
    """A client for edge-1's HTTPS listener, trusting the lab CA."""
    with httpx.Client(base_url=edge["endpoints"]["nginx_https"], verify=tls_context(ca_cert), timeout=15) as client:
        yield client


def instance(response: httpx.Response) -> str:
    return response.headers["x-backend-instance"]


def spread(responses: list[httpx.Response]) -> Counter:
    return Counter(instance(r) for r in responses)


def ws_url(https_url: str, path: str = "/ws") -> str:
    return https_url.replace("https://", "wss://", 1) + path


def ws_hello(url: str, ca_cert: str | None = None, headers: dict | None = None) -> dict:
    """Open a WebSocket (wss:// with the lab CA, or ws://), return its hello."""
    async def hello() -> dict:
        ssl_ctx = tls_context(ca_cert) if url.startswith("wss://") else None
        async with ws_connect(url, ssl=ssl_ctx, additional_headers=headers or {}, open_timeout=10,
                              close_timeout=2) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    return asyncio.run(hello())


def access_log(host, marker: str) -> list[dict]:
    """The access-log entries whose request id contains `marker`.

    The log is written with a 1 s flush interval, so callers wait a moment
    after the requests they look for.
    """
    out = host.check_output(f"grep -F {marker} {ACCESS_LOG} || true")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    # Idempotent requests resent once because the connection closed before
    # any answer (a reload closing idle keep-alive connections).
    resent_after_close: int = 0
    ws_messages: int = 0
    ws_failures: list[str] = field(default_factory=list)
    # Every HTTP request: (time.time() when answered, X-Backend-Instance or "", status or error).
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)
    # Every HTTP request: (time.time() when answered, seconds it took, retry included).
    latencies: list[tuple[float, float]] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        return [o for o in self.outcomes if start <= o[0] < end]


class LoadGenerator:
    """Steady HTTPS requests plus long-lived WebSockets against one edge.

    HTTP workers reuse keepalive connections (what browsers do); each
    WebSocket sends a message every 0.2 s and expects its echo from the
    instance that greeted it.  Everything stops by itself after
    `max_seconds`, whatever the caller does.
    """

    def __init__(self, base_url: str, ca_cert: str, ips: ClientIPs, *,
                 http_workers: int = 3, websockets: int = 3, path: str = "/api/load",
                 method: str = "GET", max_seconds: float = 120.0) -> None:
        self.base_url, self.ca_cert, self.ips, self.path = base_url, ca_cert, ips, path
        self.method = method
        self.http_workers, self.websockets = http_workers, websockets
        self.deadline = time.monotonic() + max_seconds
        self.report = LoadReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ws_ready = threading.Barrier(websockets + 1) if websockets else None

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def _http_worker(self) -> None:
        with httpx.Client(base_url=self.base_url, verify=tls_context(self.ca_cert), timeout=10) as client:
            while self._running():
                # A new client address per request keeps the load under the
                # per-IP rate limit, which is not what this load measures.
                headers = {"x-forwarded-for": self.ips.take()}
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
                        if self.method not in IDEMPOTENT:
                            raise
                        retried = True
                        r = client.request(self.method, self.path, headers=headers)
                    problem = None if r.status_code == 200 else f"HTTP {r.status_code}"
                    outcome = (time.time(), r.headers.get("x-backend-instance", ""), str(r.status_code))
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    outcome = (time.time(), "", type(exc).__name__)
                with self._lock:
                    self.report.requests += 1
                    self.report.outcomes.append(outcome)
                    self.report.latencies.append((outcome[0], time.monotonic() - sent))
                    self.report.resent_after_close += retried
                    if problem:
                        self.report.failures.append(problem)
                time.sleep(0.02)

    def _ws_session(self, n: int) -> None:
        asyncio.run(self._ws_session_async(n))

    async def _ws_session_async(self, n: int) -> None:
        # asyncio's client, not the threaded sync one: see ws_connect below.
        try:
            async with ws_connect(ws_url(self.base_url), ssl=tls_context(self.ca_cert),
                                  additional_headers={"x-forwarded-for": self.ips.take()},
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
            t.join(timeout=15)
