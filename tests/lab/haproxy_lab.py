"""Helpers for the HAProxy lab tests: the runtime API, server states, traffic.

The runtime API is a UNIX socket on the node (local only by design): the
tests reach it through the CLI's own client (edge.runtime, the node's
haproxy part over the CLI's SSH).  Shared helpers (node(), wait_until(),
the load generator) are in labkit.py.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

from labkit import ClientIPs, LoadGenerator, wait_until

from automata_lb import edge, targets
from automata_lb.edge import stat_rows
from automata_lb.targets import EdgeNode, NodePaths, TargetError

# Where the lab's nodes keep them: the roles' defaults, as the CLI reads them.
_PATHS = NodePaths.of({}, "the roles' defaults")
ADMIN_SOCKET, CONFIG = _PATHS.haproxy_socket, _PATHS.haproxy_config


@functools.cache
def _edge_node(name: str) -> EdgeNode:
    return next(n for n in targets.lab().edges if n.name == name)


def runtime(host, *commands: str) -> str:
    """Runtime API commands on `host`'s HAProxy (one connection); an
    AssertionError when HAProxy refuses one or cannot be asked (the socket
    changes hands during a reload)."""
    try:
        return edge.runtime(_edge_node(host.backend.host), *commands)
    except TargetError as exc:
        raise AssertionError(str(exc)) from None


@dataclass(frozen=True)
class ServerState:
    status: str        # UP, DOWN, MAINT, DRAIN, "UP 1/2" while rising...
    check_status: str  # L7OK, L7STS, HANA (circuit breaker) ...
    weight: int        # effective weight (slowstart ramps it up)
    sessions: int = 0  # requests on the server now (scur)
    set_weight: int = 0  # the weight it was given (config or runtime API), slowstart's target


def server_states(host, backend: str) -> dict[str, ServerState]:
    rows = stat_rows(runtime(host, "show stat"))
    return {r["svname"]: ServerState(r["status"], r["check_status"].lstrip("* "), int(r["weight"] or 0),
                                     int(r["scur"] or 0), int(r["uweight"] or 0))
            for r in rows if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


def retries(host, backend: str) -> int:
    """Requests of `backend` HAProxy sent again (retries plus redispatches to
    another server), since the running worker started."""
    rows = stat_rows(runtime(host, "show stat"))
    return next(int(r["wretr"] or 0) + int(r["wredis"] or 0) for r in rows
                if r["pxname"] == backend and r["svname"] == "BACKEND")


def worker_traffic(host, frontend: str = "public") -> tuple[int, int]:
    """(pid, HTTP requests its `frontend` took) of the worker answering the
    runtime API.  After a reload that is the new worker, whose counters start
    at zero: so this counts only traffic that reached the new configuration.
    (0, 0) while the socket changes hands."""
    try:
        out = runtime(host, "show info", "show stat")
    except AssertionError:
        return 0, 0
    info_text, _, stat = out.partition("# pxname")
    info = dict(line.split(": ", 1) for line in info_text.splitlines() if ": " in line)
    stat = "pxname" + stat if stat else ""
    requests = next((int(r["req_tot"] or 0) for r in stat_rows(stat)
                     if r["pxname"] == frontend and r["svname"] == "FRONTEND"), 0)
    return int(info.get("Pid", 0)), requests


def wait_for_new_worker_traffic(host, old_worker: int, requests: int = 50) -> float:
    """The reload's new worker is the one answering and has served `requests`
    requests (its counters start at zero): traffic reached the new configuration."""
    return wait_until(lambda: (w := worker_traffic(host))[0] not in (0, old_worker) and w[1] >= requests,
                      timeout=30, interval=0.5, what=f"{requests} requests on the new HAProxy worker")


def haproxy_load(url: str, ca_cert: str, clients: int = 4, max_seconds: float = 150) -> LoadGenerator:
    """Keep-alive clients plus one client opening a new connection per request
    to /health, so a reload is met on an idle-connection handover and on the
    listening socket.  A connection closed unanswered is a failure here, not
    resent."""
    return LoadGenerator(url, ca_cert, ClientIPs(), http_workers=clients, new_connection_workers=1, websockets=0,
                         path="/health", timeout=5, max_seconds=max_seconds, resend_after_close=False)


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value).groups()
    return int(number) * {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@dataclass(frozen=True)
class HealthSettings:
    inter: float
    fall: int
    rise: int
    error_limit: int
    slowstart: float


def health_settings(host) -> HealthSettings:
    """What the running configuration says, so the bounds follow the inventory."""
    line = next(line for line in host.file(CONFIG).content_string.splitlines()
                if line.strip().startswith("default-server"))
    words = line.split()
    opt = {words[i]: words[i + 1] for i in range(1, len(words) - 1)}
    return HealthSettings(_seconds(opt["inter"]), int(opt["fall"]), int(opt["rise"]),
                          int(opt["error-limit"]), _seconds(opt["slowstart"]))


def wait_until_settled(host, backends: list[str], timeout: float = 60) -> None:
    """Every server UP at the weight it was given (slowstart finished), so a
    test that counts instances is not skewed by an earlier test.  (Equal
    effective weights are not enough: servers that came back together ramp
    up together.)"""
    def settled() -> bool:
        for backend in backends:
            states = server_states(host, backend)
            if not states or any(s.status != "UP" or s.weight != s.set_weight for s in states.values()):
                return False
        return True
    wait_until(settled, timeout, interval=1, what=f"every server of {backends} UP at full weight")


def instances(client: httpx.Client, path: str, count: int, **kwargs) -> list[str]:
    out = []
    for _ in range(count):
        response = client.get(path, **kwargs)
        out.append(response.headers["x-backend-instance"])
    return out


def stats_password(lab: dict) -> str:
    return Path(lab["credentials"]["haproxy_stats_password_file"]).read_text().strip()


class WebSocketSession:
    """An open WebSocket through HAProxy that remembers which instance took it."""

    def __init__(self, url: str) -> None:
        self.ws = ws_connect(url, open_timeout=5, close_timeout=2, legacy=True)
        hello = json.loads(self.ws.recv(timeout=5))
        assert hello["type"] == "hello", hello
        self.instance = hello["instance"]

    def echo(self, text: str) -> str:
        self.ws.send(text)
        reply = json.loads(self.ws.recv(timeout=5))
        assert reply == {"type": "echo", "instance": self.instance, "data": text}, reply
        return reply["instance"]

    def close(self) -> None:
        self.ws.close()
