"""The traffic of the learning platform, one Locust user class per traffic
class, weighted like real traffic:

| class           | weight | does |
|-----------------|--------|------|
| ApiUser         | 65     | browses: GET/POST on /api/..., 1-3 s think time |
| WebSocketUser   | 15     | live sessions on /ws: many short, some long, messages every 50-250 ms, each echo checked |
| AiUser          | 10     | slow (/ai/complete, 2 s) and streamed (/ai/stream, 3 s) answers |
| AuthUser        | 10     | login bursts that meet the auth rate limit on purpose |

Run all four (the mixed scenario) or name classes:

    locust -f load_tests/locustfile.py --host https://127.0.0.1:8443 --users 100 --spawn-rate 10
    .venv/bin/python -m load_tests --scenario auth --target nginx      # gates, reports, exit status

Every user acts as its own client: it sends X-Forwarded-For with an address
of its own from 198.18.0.0/15 (RFC 2544, benchmarking), which a balancer
that trusts the proxy in front of it (the lab's gateway) uses for its
per-client limits and affinity, as it would for real clients.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import sys
import time
from pathlib import Path

import gevent
import gevent.ssl
from locust import FastHttpUser, User, between, events, task

# websocket-client is plain blocking sockets: imported after locust, whose
# import monkey-patches socket and ssl, its reads and writes yield to the
# other users instead of blocking the process.
import websocket  # isort: skip

if __package__ in (None, ""):
    # `locust -f load_tests/locustfile.py` imports this file by path: make
    # the package importable from any working directory.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.hooks import recorder, run  # also registers the event listeners
from load_tests.summary import RATE_LIMITED

_numbers = itertools.count()
# A random start, so a rerun within seconds does not meet the limit state
# the previous run left in the balancers' per-client tables.
_FIRST = random.randrange(512)
USER_AGENT = "automata-load-test"


def client_address(n: int) -> str:
    """User n's address in 198.18.0.0/15: the first 512 users each get a
    /24 of their own, because NGINX's ip_hash hashes the /24."""
    k = _FIRST + n
    net, host = k % 512, 1 + (k // 512) % 254
    return f"198.{18 + net // 256}.{net % 256}.{host}"


@functools.cache
def tls_context(cafile: str | None = None) -> gevent.ssl.SSLContext:
    """The system's trust store plus the run's extra CA (the lab's).

    One context for the whole process: building one parses the system's
    CA bundle, ~100 ms of CPU that would otherwise land in the first
    request of every user as if the balancer had been slow.
    """
    ctx = gevent.ssl.create_default_context()
    for ca in (cafile, run.get("ca_cert")):
        if ca:
            ctx.load_verify_locations(cafile=ca)
    return ctx


@events.test_start.add_listener
def _warm_tls_context(**_kw) -> None:
    tls_context()  # built once before the first user needs it


class Edge:
    """Which target and which client address a user is: users are dealt to
    the targets in turn, each with an address of its own."""

    def _pick_target(self, environment) -> None:
        n = next(_numbers)
        targets = run.get("targets") or [{"name": environment.host, "url": environment.host}]
        target = targets[n % len(targets)]
        self.host, self.target_name = target["url"], target["name"]
        self.address = client_address(n)
        self.identity = {"User-Agent": USER_AGENT}
        if run.get("forwarded_for", True):
            self.identity["X-Forwarded-For"] = self.address

    def context(self) -> dict:
        return {"target": self.target_name}


class EdgeHttpUser(Edge, FastHttpUser):
    """FastHttpUser (geventhttpclient): keep-alive connections per user, and
    several times less CPU per request than the requests-based HttpUser."""

    abstract = True
    insecure = False
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment) -> None:
        self._pick_target(environment)
        self.default_headers = self.identity
        self.ssl_context_factory = tls_context
        super().__init__(environment)

    def call(self, method: str, path: str, name: str, *, check=None, **kwargs):
        """One request with the project's rules for its outcome:
        a 429 is its own entry (`<name> [429]`), neither success nor
        failure of <name>; anything but 200 from a backend instance fails."""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as r:
            if r.status_code == 0:
                return None  # connection-level error: Locust records the exception
            if r.status_code == 429:
                r.request_meta["name"] = name + RATE_LIMITED
                r.success()
                return None
            instance = r.headers.get("x-backend-instance")
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code} from {instance or 'the load balancer'}")
            elif not instance:
                r.failure("200 without X-Backend-Instance: not answered by a backend")
            elif check and (problem := check(r)):
                r.failure(problem)
            else:
                r.success()
            return r


class ApiUser(EdgeHttpUser):
    """Browsing: course lists and pages, lessons, progress saves, and now and
    then a CPU-heavy call (NGINX sends /api/compute/ to least_conn)."""

    weight = 65
    wait_time = between(1, 3)

    @task(4)
    def courses(self) -> None:
        self.call("GET", f"/api/courses?page={random.randint(1, 5)}", "/api/courses")

    @task(3)
    def course(self) -> None:
        course = random.randint(1, 500)
        self.call("GET", f"/api/courses/{course}", "/api/courses/[id]")
        self.call("GET", f"/api/courses/{course}/lessons", "/api/courses/[id]/lessons")

    @task(3)
    def lesson(self) -> None:
        self.call("GET", f"/api/lessons/{random.randint(1, 5000)}", "/api/lessons/[id]")

    @task(2)
    def save_progress(self) -> None:
        self.call("POST", "/api/progress", "/api/progress",
                  json={"lesson": random.randint(1, 5000), "done": random.random() < 0.3})

    @task(1)
    def grade(self) -> None:
        self.call("POST", "/api/compute/grade", "/api/compute/grade", json={"answers": [1, 2, 3]})


def _has_token(r) -> str | None:
    return None if "token" in r.json() else "login answered without a token"


class AuthUser(EdgeHttpUser):
    """Logins in bursts from one client address (a retrying app, a classroom
    behind one NAT): more than the per-client auth limit allows, so some
    answers are 429, which is the limit doing its job, not a failure."""

    weight = 10
    wait_time = between(2, 4)
    # Longer than the auth limit's burst allowance (NGINX: burst 10 at
    # 5 r/s; HAProxy: 5 per second), so every burst meets the limit.
    burst = (12, 16)

    @task(3)
    def login_burst(self) -> None:
        for _ in range(random.randint(*self.burst)):
            self.call("POST", "/auth/login", "/auth/login", check=_has_token,
                      json={"user": f"learner-{random.randint(1, 10**6)}", "password": "not-a-secret"})

    @task(1)
    def session(self) -> None:
        self.call("GET", "/auth/session", "/auth/session")


class AiUser(EdgeHttpUser):
    """Slow answers: a 2 s completion, and a 3 s stream of one NDJSON line a
    second.  For the stream, the first byte (what the learner waits for)
    and the whole answer are separate entries."""

    weight = 10
    wait_time = between(1, 3)
    # Longer than any answer: a stream cut by the balancer must fail here,
    # not hang the user.
    network_timeout = 30.0

    @task(1)
    def complete(self) -> None:
        self.call("GET", "/ai/complete?seconds=2", "/ai/complete",
                  check=lambda r: None if r.json().get("seconds") == 2 else "wrong answer")

    @task(2)
    def stream(self) -> None:
        name, start_time, t0 = "/ai/stream", time.time(), time.perf_counter()
        with self.client.get("/ai/stream?stream=1&seconds=3", name=name, stream=True,
                             catch_response=True) as r:
            if r.status_code == 0:
                return
            if r.status_code == 429:
                r.request_meta["name"] = name + RATE_LIMITED
                r.success()
                return
            instance = r.headers.get("x-backend-instance")
            if r.status_code != 200 or not instance:
                r.failure(f"HTTP {r.status_code} from {instance or 'the load balancer'}")
                return
            lines, done, buffer = 0, False, b""
            try:
                # One byte at a time: a larger read waits for that many bytes,
                # which would hide when the first line arrived.
                for chunk in r.iter_content(chunk_size=1, decode_content=False):
                    if not lines and not buffer:
                        self.environment.events.request.fire(
                            request_type="GET", name=f"{name} first byte", start_time=start_time,
                            response_time=(time.perf_counter() - t0) * 1000, response_length=0,
                            response=None, exception=None,
                            context={**self.context(), "instance": instance})
                    buffer += chunk
                    if chunk == b"\n":
                        lines += 1
                        done = json.loads(buffer).get("done", False)
                        buffer = b""
            except Exception as exc:  # noqa: BLE001  (whatever cut the stream is the failure)
                r.failure(f"stream cut after {lines} lines: {type(exc).__name__}: {exc}")
            else:
                if not done:
                    r.failure(f"stream ended after {lines} lines without its last line")
                else:
                    r.success()
            # The entry times the whole answer, not only its headers.
            r.request_meta["response_time"] = (time.perf_counter() - t0) * 1000


GOING_AWAY = 1001


class SessionEnded(Exception):
    """The server closed the WebSocket with 1001 (going away): a backend
    shutting down gracefully; the client reconnects, nothing failed."""


class WebSocketUser(Edge, User):
    """Live sessions: most short (10-30 messages 50 ms apart), one in five
    long (a message every 250 ms for up to a minute).  The connect (until the
    greeting) and each message's round trip are their own entries; every echo
    must come from the instance that greeted the session."""

    weight = 15
    wait_time = between(0.5, 2)
    long_share = 0.2

    def __init__(self, environment) -> None:
        self._pick_target(environment)
        super().__init__(environment)
        self.url = self.host.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"
        self.ws: websocket.WebSocket | None = None

    def _fire(self, name: str, t0: float, start_time: float, exception=None, instance=None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, start_time=start_time, response_time=(time.perf_counter() - t0) * 1000,
            response_length=0, response=None, exception=exception,
            context={**self.context(), "instance": instance})

    def _connect(self) -> str | None:
        name, start_time, t0 = "/ws connect", time.time(), time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                self.url, timeout=10, header=[f"{k}: {v}" for k, v in self.identity.items()],
                sslopt={"context": tls_context()} if self.url.startswith("wss://") else None,
                enable_multithread=False)
            hello = self._read_frame()
            if hello.get("type") != "hello" or not hello.get("instance"):
                raise AssertionError(f"expected a greeting, got {hello}")
        except websocket.WebSocketBadStatusException as exc:
            self._close()
            if exc.status_code == 429:
                self._fire(name + RATE_LIMITED, t0, start_time)
            else:
                self._fire(name, t0, start_time, exception=RuntimeError(f"HTTP {exc.status_code}"))
            return None
        except Exception as exc:  # noqa: BLE001  (every way a connect fails is a failed connect)
            self._close()
            self._fire(name, t0, start_time, exception=exc)
            return None
        self._fire(name, t0, start_time, instance=hello["instance"])
        return hello["instance"]

    def _echo(self, instance: str, text: str) -> None:
        """Send one message and read frames until its echo."""
        name, start_time, t0 = "/ws message", time.time(), time.perf_counter()
        try:
            try:
                self.ws.send(text)
            except websocket.WebSocketConnectionClosedException:
                # The server may have said goodbye while this user was
                # idle: its close frame is still to be read.
                self._read_frame()
                raise
            while True:
                frame = self._read_frame()
                if frame.get("type") == "echo" and frame.get("data") == text:
                    break
            if frame.get("instance") != instance:
                raise AssertionError(f"echo from {frame.get('instance')}, session is on {instance}")
        except SessionEnded:
            recorder.ws_going_away += 1
            raise
        except Exception as exc:
            self._fire(name, t0, start_time, exception=exc)
            raise
        self._fire(name, t0, start_time, instance=instance)

    def _read_frame(self) -> dict:
        """The next message; a close frame ends the session: 1001 (going
        away) gracefully, any other code as a failure.

        Frames, not recv_data(): on a close frame that answers the close
        itself, which fails when the server has already hung up and would
        hide the code it sent.
        """
        while True:
            frame = self.ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(frame.data)
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                if code == GOING_AWAY:
                    raise SessionEnded()
                raise ConnectionError(f"closed by the server (code {code})")
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)

    @task
    def session(self) -> None:
        instance = self._connect()
        if instance is None:
            return
        if random.random() < self.long_share:
            count, gap = random.randint(120, 240), 0.25
        else:
            count, gap = random.randint(10, 30), 0.05
        try:
            for i in range(count):
                self._echo(instance, f"{self.address} {i}")
                gevent.sleep(gap)
        except Exception:  # noqa: BLE001,S110  (recorded by _echo; the next session reconnects)
            pass
        finally:
            self._close()

    def _close(self) -> None:
        """Say goodbye and hang up, without waiting for the answer.

        Not WebSocket.close(): it waits for the server's close frame inside
        a bare `except:`, which swallows the GreenletExit Locust uses to stop
        a user, and the user then runs on after the test has ended.
        """
        ws, self.ws = self.ws, None
        if ws is None:
            return
        try:
            if ws.connected:
                ws.send_close()
        except Exception:  # noqa: BLE001,S110  (already broken: nothing left to say)
            pass
        finally:
            ws.shutdown()

    def on_stop(self) -> None:
        self._close()
