"""python -m bench.balancer [--quick]: the backend's client-side balancing
strategies side by side (docs/client-load-balancing.md).

Three reference backends on loopback form the AI pool.  Each strategy
(round robin, least outstanding, P2C over peak EWMA) is measured twice
through the library, first with all three backends healthy, then with one
slowed by fault injection (+200 ms):

- saturated: a closed loop of N callers back to back: the most calls per
  second, and the p99 when everything queues;
- at a fixed rate below saturation (open loop, latency counted from each
  call's scheduled start, so a stalled client cannot hide its own delay):
  p50/p99, errors and the share of calls the slow backend got.

Then the library's own cost per pick, timed without I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backend"))

from automata_backend.load_balancer import BalancerConfig, LoadBalancer, StaticDiscovery  # noqa: E402
from automata_backend.load_balancer.balancer import clock  # noqa: E402

STRATEGIES = ("round_robin", "least_outstanding", "p2c_ewma")
SCENARIOS = ("all healthy", "one slow")
# The goal: with one slow instance, P2C-EWMA's p99 stays within this factor
# of its all-healthy p99, and round robin's does not.
GOAL_RATIO = 1.5
GOAL_PICK_US = 5.0
# The fixed rate, as a share of the calls/s the pool manages saturated and
# healthy.  Latency compares strategies only below saturation: with one
# backend slow, P2C moves its share onto the other two, which must have
# the CPU to take it (on a shared 2-core machine they may not).
RATE_SHARE = 0.3


@dataclass
class Run:
    scenario: str
    strategy: str
    max_rate: float  # calls/s, saturated
    saturated_p99_ms: float
    calls: int  # at the fixed rate
    p50_ms: float
    p99_ms: float
    errors: int
    to_slow: int


@dataclass
class Sample:
    latencies: list[float]
    errors: int
    to_slow: int
    seconds: float

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend:
    """One `python -m automata_backend` in its own session, killed on exit."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.port, self.admin_port = _free_port(), _free_port()
        self.log = log_dir / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "backend")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "automata_backend", "--instance", name, "--version", "stable",
             "--port", str(self.port), "--admin-port", str(self.admin_port)],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://{self.address}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not come up:\n{self.log.read_text()}")

    def fault(self, **state) -> None:
        url = f"http://127.0.0.1:{self.admin_port}/fault"
        (httpx.put(url, json=state, timeout=5) if state else httpx.delete(url, timeout=5)).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def _balancer(strategy: str, addresses: list[str], connections: int) -> LoadBalancer:
    lb = LoadBalancer("bench", StaticDiscovery(addresses),
                      BalancerConfig(strategy=strategy, max_connections=connections, pool_size=connections,
                                     timeout=10, health_interval=None))
    await lb.start()
    return lb


async def _call(lb: LoadBalancer) -> tuple[bool, str]:
    try:
        r = await lb.request("GET", "/ai/bench", params={"seconds": "0"})
        return r.status_code == 200, r.request.url.netloc.decode()
    except Exception:  # noqa: BLE001 - counted, the run goes on
        return False, ""


async def closed_loop(strategy: str, addresses: list[str], slow: str | None, *, callers: int,
                      duration: float, warmup: float) -> Sample:
    """`callers` back to back; only calls that start after the warm-up count."""
    lb = await _balancer(strategy, addresses, callers)
    sample = Sample([], 0, 0, 0.0)
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + duration

    async def caller() -> None:
        while (start := time.perf_counter()) < stop_at:
            ok, served = await _call(lb)
            if start >= measure_from:
                sample.latencies.append(time.perf_counter() - start)
                sample.errors += not ok
                sample.to_slow += served == slow

    try:
        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        await lb.aclose(5)
    sample.seconds = time.perf_counter() - measure_from
    return sample


async def open_loop(strategy: str, addresses: list[str], slow: str | None, *, rate: float,
                    duration: float, warmup: float, limit: int = 512) -> Sample:
    """Calls start on a fixed schedule whatever the answers do; latency runs
    from the scheduled start.  More than `limit` outstanding calls count as
    errors instead of growing without bound."""
    lb = await _balancer(strategy, addresses, limit)
    sample = Sample([], 0, 0, duration)
    outstanding = 0

    async def one(due: float, counted: bool) -> None:
        nonlocal outstanding
        outstanding += 1
        try:
            ok, served = await _call(lb)
        finally:
            outstanding -= 1
        if counted:
            sample.latencies.append(time.perf_counter() - due)
            sample.errors += not ok
            sample.to_slow += served == slow

    start = time.perf_counter() + 0.01
    skip = int(warmup * rate)
    tasks = []
    try:
        for i in range(int((warmup + duration) * rate)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= limit:
                sample.errors += i >= skip
                continue
            tasks.append(asyncio.ensure_future(one(due, i >= skip)))
        await asyncio.gather(*tasks)
    finally:
        await lb.aclose(5)
    return sample


def pick_overhead(n: int, endpoints: int) -> dict[str, tuple[float, float]]:
    """µs per pick, and per pick plus the per-try bookkeeping (breaker,
    in-flight count, EWMA, metrics), without any I/O."""

    async def measure() -> dict[str, tuple[float, float]]:
        out = {}
        addresses = [f"10.0.0.{i}:8000" for i in range(1, endpoints + 1)]
        for strategy in (*STRATEGIES, "consistent_hash"):
            lb = LoadBalancer("overhead", StaticDiscovery(addresses), BalancerConfig(strategy=strategy,
                                                                                      health_interval=None))
            await lb.start()
            key = "user-42" if strategy == "consistent_hash" else None
            pick = lb.pick
            t0 = time.perf_counter()
            for _ in range(n):
                pick(key)
            picked = (time.perf_counter() - t0) / n * 1e6
            t0 = time.perf_counter()
            for _ in range(n):
                e = pick(key)
                started = clock()
                trial = lb._begin(e, started)
                lb._settle(e, trial, started, 200)
                lb._end(e, trial, True)
            cycle = (time.perf_counter() - t0) / n * 1e6
            await lb.aclose(0)
            out[strategy] = (picked, cycle)
        return out

    return asyncio.run(measure())


def format_runs(runs: list[Run], rate: float, callers: int) -> str:
    healthy = {r.strategy: r.p99_ms for r in runs if r.scenario == "all healthy"}
    top = f"{'':<34}{f'saturated ({callers} callers)':^20}|{f'at {rate:g} calls/s':^56}"
    head = f"{'scenario':<14}{'strategy':<20}{'calls/s':>9}{'p99 ms':>10} |{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}" \
           f"{'p99/healthy':>13}{'errors':>8}{'to slow':>9}"
    lines = [top, head, "-" * len(head)]
    for r in runs:
        ratio = r.p99_ms / healthy[r.strategy] if healthy.get(r.strategy) else float("nan")
        share = f"{100 * r.to_slow / r.calls:.1f}%" if r.scenario != "all healthy" and r.calls else "-"
        lines.append(f"{r.scenario:<14}{r.strategy:<20}{r.max_rate:>9.0f}{r.saturated_p99_ms:>10.1f} |"
                     f"{r.calls:>7}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{ratio:>12.2f}x{r.errors:>8}{share:>9}")
    return "\n".join(lines)


def verdict(runs: list[Run], overhead: dict[str, tuple[float, float]]) -> list[str]:
    by = {(r.scenario, r.strategy): r.p99_ms for r in runs}

    def ratio(strategy: str) -> float:
        return by[("one slow", strategy)] / by[("all healthy", strategy)]

    p2c, rr = ratio("p2c_ewma"), ratio("round_robin")
    worst_pick = max(picked for picked, _ in overhead.values())
    return [
        f"p2c_ewma p99 with one slow backend: {p2c:.2f}x its all-healthy p99 "
        f"(goal <= {GOAL_RATIO}x): {'met' if p2c <= GOAL_RATIO else 'NOT met'}",
        f"round_robin p99 with one slow backend: {rr:.2f}x its all-healthy p99 "
        f"(expected > {GOAL_RATIO}x): {'yes' if rr > GOAL_RATIO else 'NO'}",
        f"slowest pick (3 endpoints): {worst_pick:.2f} us (goal < {GOAL_PICK_US:g} us): "
        f"{'met' if worst_pick < GOAL_PICK_US else 'NOT met'}",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.balancer", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short run per cell for a smoke test (~15 s); numbers are noisy")
    parser.add_argument("--repeats", type=int, help="runs per cell; the median is reported (default 3)")
    parser.add_argument("--rate", type=float,
                        help=f"calls/s of the fixed-rate runs (default: {RATE_SHARE:.0%} of the capacity measured "
                             "first, so the comparison stays below saturation on a busy machine)")
    parser.add_argument("--duration", type=float, help="measured seconds per fixed-rate run (default 6)")
    parser.add_argument("--saturated", type=float, help="measured seconds per saturated run (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds per run before measuring (default 0.5)")
    parser.add_argument("--callers", type=int, default=16, help="callers of the saturated runs (default 16)")
    parser.add_argument("--slow-ms", type=int, default=200, help="latency injected into one backend (default 200)")
    parser.add_argument("--picks", type=int, help="picks timed per strategy (default 200000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 6.0)
    args.saturated = args.saturated or (0.5 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.picks = args.picks or (20_000 if args.quick else 200_000)
    for name in ("repeats", "duration", "saturated", "callers", "picks"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name}: must be > 0, got {getattr(args, name)}")
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate: must be > 0, got {args.rate}")
    if args.warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {args.warmup}")
    if not 0 <= args.slow_ms <= 600_000:
        parser.error(f"--slow-ms: must be 0-600000, got {args.slow_ms}")
    return args


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def combine(samples: list[Run]) -> Run:
    """One row from repeated runs: medians of rates and percentiles (one
    disturbed run on a shared machine does not move it), sums of counts."""
    first = samples[0]
    return Run(first.scenario, first.strategy,
               _median([r.max_rate for r in samples]), _median([r.saturated_p99_ms for r in samples]),
               sum(r.calls for r in samples), _median([r.p50_ms for r in samples]),
               _median([r.p99_ms for r in samples]), sum(r.errors for r in samples), sum(r.to_slow for r in samples))


def measure(args: argparse.Namespace) -> tuple[list[Run], list[Run]]:
    """Every (scenario, strategy) `repeats` times; healthy and slow run back
    to back per strategy, so slow drift of the machine affects both sides of
    the ratio alike.  Returns (rows, every run)."""
    raw: list[Run] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-balancer-") as tmp:
        backends = [Backend(f"ai-{i}", Path(tmp)) for i in (1, 2, 3)]
        for b in backends:
            stack.callback(b.stop)
        for b in backends:
            b.wait_ready()
        addresses = [b.address for b in backends]
        slow = backends[2]
        if args.rate is None:
            capacity = asyncio.run(closed_loop("round_robin", addresses, None, callers=args.callers,
                                               duration=args.saturated, warmup=args.warmup))
            args.rate = max(10, round(RATE_SHARE * len(capacity.latencies) / capacity.seconds, -1))
            print(f"bench.balancer: capacity {len(capacity.latencies) / capacity.seconds:.0f} calls/s; "
                  f"fixed rate {args.rate:g} calls/s", file=sys.stderr, flush=True)
        for repeat in range(1, args.repeats + 1):
            for strategy in STRATEGIES:
                for scenario in SCENARIOS:
                    for b in backends:
                        b.fault()
                    if scenario == "one slow":
                        slow.fault(latency_ms=args.slow_ms)
                    slow_address = slow.address if scenario == "one slow" else None
                    print(f"bench.balancer: run {repeat}/{args.repeats}: {scenario}, {strategy}",
                          file=sys.stderr, flush=True)
                    saturated = asyncio.run(closed_loop(strategy, addresses, slow_address, callers=args.callers,
                                                        duration=args.saturated, warmup=args.warmup))
                    fixed = asyncio.run(open_loop(strategy, addresses, slow_address, rate=args.rate,
                                                  duration=args.duration, warmup=args.warmup))
                    raw.append(Run(scenario, strategy,
                                   len(saturated.latencies) / saturated.seconds, saturated.percentile_ms(99),
                                   len(fixed.latencies), fixed.percentile_ms(50), fixed.percentile_ms(99),
                                   saturated.errors + fixed.errors, fixed.to_slow))
        for b in backends:
            b.fault()
    rows = [combine([r for r in raw if (r.scenario, r.strategy) == (scenario, strategy)])
            for scenario in SCENARIOS for strategy in STRATEGIES]
    return rows, raw


class _Fields(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"bench.balancer: {record.name}: {record.getMessage()} {getattr(record, 'fields', {})}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so the backends started below are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # The balancer's warnings (a breaker opening under overload) go to stderr
    # with their fields; the table stays on stdout.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Fields())
    lb_log = logging.getLogger("load_balancer")
    lb_log.addHandler(handler)
    lb_log.setLevel(logging.WARNING)
    lb_log.propagate = False
    # Other work on the machine shows in the numbers: say how busy it was.
    load_before = os.getloadavg()[0]
    runs, raw = measure(args)
    overhead = {n: pick_overhead(args.picks, n) for n in (3, 30)}
    load = (load_before, os.getloadavg()[0])
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in runs], "every_run": [asdict(r) for r in raw],
                          "pick_us": {f"{n} endpoints": {s: {"pick": p, "pick_and_bookkeeping": c}
                                                         for s, (p, c) in o.items()} for n, o in overhead.items()},
                          "settings": {k: getattr(args, k) for k in ("repeats", "rate", "duration", "saturated",
                                                                     "warmup", "callers", "slow_ms")},
                          "load_average_1m": {"start": load[0], "end": load[1], "cpus": os.cpu_count()}}, indent=2))
        return 0
    print(f"\nClient-side balancing over 3 local backends; 'one slow': +{args.slow_ms} ms on ai-3. "
          f"Saturated: {args.saturated:g} s per run, fixed rate: {args.duration:g} s per run, each after "
          f"{args.warmup:g} s warm-up; median of {args.repeats} run(s), calls/errors summed.\n"
          f"Load average {load[0]:.1f} at start, {load[1]:.1f} at end, on {os.cpu_count()} CPUs"
          f"{': above the CPU count, other work disturbed the run' if max(load) > (os.cpu_count() or 1) else ''}.\n")
    print(format_runs(runs, args.rate, args.callers))
    print("\nLibrary cost per call without I/O, microseconds (pick / pick + bookkeeping):\n")
    head = f"{'strategy':<20}" + "".join(f"{f'{n} endpoints':>24}" for n in overhead)
    print(head)
    print("-" * len(head))
    for strategy in overhead[3]:
        print(f"{strategy:<20}" + "".join(f"{f'{o[strategy][0]:.2f} / {o[strategy][1]:.2f}':>24}"
                                          for o in overhead.values()))
    print()
    for line in verdict(runs, overhead[3]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
