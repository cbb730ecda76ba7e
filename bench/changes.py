"""python -m bench.changes: what a change of an NGINX pool costs, two ways.

- reload: the pool is a file of its own; a change rewrites it, `nginx -t`
  checks the whole configuration, then NGINX reloads and the call returns
  once only new workers accept connections (as automata_lb/node/nginx.py
  does on an edge node).
- lua: the pool is a list in a shared dictionary that a `balancer_by_lua`
  block reads per request (ingress-nginx's way); a change is one PUT to an
  admin listener on loopback.  No reload.

Both run nginx-minimal's proxy settings against two backends that name
themselves.  Plain keep-alive clients (one connection each, requests back
to back, a failed request counted and never sent again, a closed
connection replaced) run through each while the pool flips between the
backends `--changes` times.  Per method: the failed requests, how long a
change takes to return, how long until the new backend answers, and
NGINX's CPU per request over the run.  docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from automata_lb.node import nginx as node_nginx
from automata_lb.wait import until
from bench.servers import Server, cpu_ticks, fill_template, nginx_argv, process_tree, reaped_ticks, ticks_to_us

RESULTS = Path(__file__).parent / "results"
LUA_MODULE = Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")


@dataclass(frozen=True)
class Ports:
    """The experiment's ports on loopback, from `base` up (18040 by default:
    clear of the lab's and of `python -m bench`'s)."""

    base: int = 18040

    @property
    def backends(self) -> tuple[int, int]:
        return self.base + 1, self.base + 2

    @property
    def reload(self) -> int:
        return self.base + 3

    @property
    def lua(self) -> int:
        return self.base + 4

    @property
    def lua_admin(self) -> int:
        return self.base + 5


@dataclass
class Clients:
    """Plain keep-alive clients: one connection each, requests back to back.
    A request that fails is counted, never sent again; the connection is
    replaced."""

    port: int
    count: int
    answers: list[tuple[float, str]] = field(default_factory=list)  # (when, backend) per answered request
    failures: Counter = field(default_factory=Counter)
    requests: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.count)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                outcome = response.getheader("X-Bench-Backend", "") if response.status == 200 else None
                failure = None if outcome is not None else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome, failure = None, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            with self._lock:
                self.requests += 1
                if failure:
                    self.failures[failure] += 1
                else:
                    self.answers.append((time.monotonic(), outcome))
        conn.close()

    def seen(self, backend: str, since: float) -> float | None:
        """When `backend` first answered at or after `since`; None if not yet."""
        first = None
        with self._lock:
            for t, b in reversed(self.answers):
                if t < since:
                    break
                if b == backend:
                    first = t
        return first


@dataclass
class Result:
    method: str
    note: str
    changes: int = 0
    requests: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    command_s: list[float] = field(default_factory=list)  # the change's own call
    effect_s: list[float] = field(default_factory=list)   # until the new backend answered
    nginx_us_per_request: float | None = None
    skipped: str | None = None

    def as_dict(self) -> dict:
        return {**self.__dict__, "failed": sum(self.failures.values())}


class ReloadPool:
    """The pool in upstream.conf; a change is the file, `nginx -t`, a reload."""

    def __init__(self, workdir: Path, ports: Ports) -> None:
        self.dir = workdir / "reload"
        self.dir.mkdir()
        self.conf = fill_template("nginx-reload.conf", self.dir / "nginx.conf", port=ports.reload)
        self._write([ports.backends[0]])
        self.server = Server("nginx-reload", nginx_argv(self.conf), ports.reload, self.dir)

    def _write(self, ports: list[int]) -> None:
        (self.dir / "upstream.conf").write_text("".join(f"server 127.0.0.1:{p};\n" for p in ports))

    def _serving(self) -> set[str]:
        """This NGINX's workers that accept connections (the lab's, in
        containers, are in /proc too)."""
        return node_nginx.serving(process_tree(self.server.proc.pid))

    def change(self, ports: list[int]) -> None:
        before = self._serving()
        self._write(ports)
        check = subprocess.run([*nginx_argv(self.conf)[:-2], "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the pool: {check.stderr.strip()}")
        os.kill(self.server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while (now := self._serving()) & before or not now:
            if time.monotonic() > deadline:
                raise RuntimeError("reloaded, but after 30 s old workers still accept connections")
            time.sleep(0.01)


class LuaPool:
    """The pool in a shared dictionary; a change is one PUT."""

    def __init__(self, workdir: Path, ports: Ports) -> None:
        directory = workdir / "lua"
        directory.mkdir()
        conf = fill_template("nginx-lua.conf", directory / "nginx.conf", port=ports.lua,
                             backend_port=ports.backends[0], admin_port=ports.lua_admin)
        self.admin_port = ports.lua_admin
        self.server = Server("nginx-lua", nginx_argv(conf), ports.lua, directory)

    def change(self, ports: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("PUT", "/members", body=",".join(f"127.0.0.1:{p}" for p in ports))
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"the Lua pool refused the change: {response.status} {body.strip()}")


METHODS = {
    "reload": ("pool file + nginx -t + reload, returns once only new workers accept", ReloadPool),
    "lua": ("balancer_by_lua reads the pool from a shared dictionary; one PUT, no reload", LuaPool),
}


def nginx_ticks(server: Server) -> int:
    """CPU of NGINX's master and workers, those a reload retired included."""
    return reaped_ticks(server.proc.pid) + cpu_ticks(server.pids())


def backends(stack: ExitStack, workdir: Path, ports: Ports) -> None:
    """The two backends that name themselves, stopped with `stack`."""
    for port in ports.backends:
        directory = workdir / f"backend-{port}"
        directory.mkdir()
        conf = fill_template("named-backend.conf", directory / "backend.conf", port=port)
        stack.enter_context(Server(f"backend-{port}", nginx_argv(conf), port, directory))


def run(method: str, workdir: Path, ports: Ports, changes: int, clients: int, gap_s: float) -> Result:
    """`changes` flips of the pool between the two backends (backends() runs
    them) under `clients` plain keep-alive clients."""
    note, pool_type = METHODS[method]
    result = Result(method, note)
    if method == "lua" and not LUA_MODULE.exists():
        result.skipped = f"no {LUA_MODULE}: apt-get install libnginx-mod-http-lua (scripts/bootstrap.sh does)"
        return result
    pool = pool_type(workdir, ports)
    with pool.server as server, Clients(server.port, clients) as load:
        # The clients' connections open and carry traffic before the first change.
        until(lambda: load.requests >= 10 * clients, 30, f"{method}: the clients' first requests")
        ticks, requests = nginx_ticks(server), load.requests
        for n in range(changes):
            new = ports.backends[(n + 1) % 2]
            started = time.monotonic()
            pool.change([new])
            result.command_s.append(time.monotonic() - started)
            deadline = started + 10
            while (seen := load.seen(str(new), started)) is None and time.monotonic() < deadline:
                time.sleep(0.002)
            if seen is None:
                raise RuntimeError(f"{method}: backend {new} never answered within 10 s of change {n + 1}")
            result.effect_s.append(seen - started)
            time.sleep(gap_s)
        served = load.requests - requests
        result.nginx_us_per_request = ticks_to_us(nginx_ticks(server) - ticks) / max(served, 1)
    result.changes, result.requests, result.failures = changes, load.requests, dict(load.failures)
    return result


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


def table(results: list[Result], clients: int) -> str:
    lines = [f"A change of an NGINX pool, {clients} plain keep-alive clients (no resend):",
             f"{'method':<8} {'changes':>7} {'requests':>9} {'failed':>7} {'call ms (median / max)':>23} "
             f"{'effect ms (median / max)':>25} {'NGINX us/req':>13}"]
    for r in results:
        if r.skipped:
            lines.append(f"{r.method:<8} skipped: {r.skipped}")
            continue
        lines.append(f"{r.method:<8} {r.changes:>7} {r.requests:>9} {sum(r.failures.values()):>7} "
                     f"{_ms(r.command_s):>23} {_ms(r.effect_s):>25} {r.nginx_us_per_request:>13.1f}")
    for r in results:
        if r.failures:
            lines.append(f"  {r.method} failures: " + ", ".join(f"{k} {v}" for k, v in sorted(r.failures.items())))
    lines += ["  call: the change's own call; effect: until the new backend answered a client;",
              "  " + "; ".join(f"{r.method}: {r.note}" for r in results)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.changes", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20, help="pool changes per method (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="keep-alive clients per method (default 8)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between changes (default 0.5)")
    parser.add_argument("--only", choices=sorted(METHODS), help="one method")
    args = parser.parse_args(argv)
    if args.changes < 1 or args.clients < 1 or args.gap < 0:
        parser.error("--changes and --clients must be at least 1, --gap not negative")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="automata-bench-changes-"))
    results = []
    ports = Ports()
    with ExitStack() as stack:
        backends(stack, workdir, ports)
        for method in [args.only] if args.only else list(METHODS):
            print(f"[bench.changes] {time.strftime('%H:%M:%S')} {method}: {args.changes} changes", file=sys.stderr)
            results.append(run(method, workdir, ports, args.changes, args.clients, args.gap))
    print(table(results, args.clients))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"changes-{time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"clients": args.clients, "gap_s": args.gap,
                               "results": [r.as_dict() for r in results]}, indent=2) + "\n")
    print(f"\nresults: {out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r.skipped for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
