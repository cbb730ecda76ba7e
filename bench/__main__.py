"""python -m bench [--quick] [--only nginx|haproxy]: run the benchmark, print the table.

See docs/benchmarks.md for what is measured and why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from bench import capacity
from bench.load import LoadSettings
from bench.report import format_capacity, format_ratios, format_table, ratio_spreads
from bench.run import Column, measure, probe
from bench.servers import CLK_TCK, Server, fill_template, nginx_argv
from bench.targets import BACKEND_PORT, TARGETS

RESULTS = Path(__file__).parent / "results"
# With pinning, wrk and the backend share CPU 0 and the load balancer gets
# CPU 1 to itself: its CPU time is then not inflated by being preempted by
# the load generator on the same core, and p99 is far less noisy.
LB_CPUS, CLIENT_CPUS = "1", "0"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short run per column and a 1,000-connection capacity check (~1 min)")
    parser.add_argument("--only", choices=["nginx", "haproxy"], help="measure one load balancer (plus direct)")
    parser.add_argument("--repeats", type=int, help="fewest interleaved rounds (one wrk run per column each); "
                                                    "the median is reported (default 3)")
    parser.add_argument("--spread", type=float, default=0.03,
                        help="stop once every ours/minimal ratio is known within this (95%% interval, default 0.03)")
    parser.add_argument("--max-rounds", type=int, help="most rounds (default 10, --quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--capacity", metavar="N,N,...",
                        help="connection counts to try, ascending; after the first with errors, "
                             "bisect towards the last clean one (default 1000,5000,10000,15000; 0 to skip)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=YAML",
                        help="override a role variable for the 'ours' columns, e.g. "
                             "--set nginx_lb_worker_connections=19000 (repeatable; value parsed as YAML)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the LB and the client to separate CPUs")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.max_rounds = max(args.max_rounds or (2 if args.quick else 10), args.repeats)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    levels = args.capacity or ("1000" if args.quick else "1000,5000,10000,15000")
    try:
        args.capacity = [n for n in (int(x) for x in levels.split(",")) if n > 0]
    except ValueError:
        parser.error(f"--capacity: expected comma-separated integers, got {levels!r}")
    try:
        args.set = {k.strip(): yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    except ValueError:
        parser.error("--set: expected VAR=VALUE")
    if args.repeats < 1 or args.duration < 1:
        parser.error("--repeats and --duration must be at least 1")
    if os.cpu_count() < 2:
        args.no_pin = True
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM unwind through every `finally` below, which stops
    # the servers started so far.  SIGINT is set explicitly: a shell starts
    # background jobs with it ignored, and then Ctrl-C would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = LoadSettings(threads=args.threads, connections=args.connections, duration_s=args.duration)
    lb_cpus, client_cpus = (None, None) if args.no_pin else (LB_CPUS, CLIENT_CPUS)
    targets = [t for t in TARGETS if args.only in (None, t.family)]
    workdir = Path(tempfile.mkdtemp(prefix="automata-bench-"))
    started = time.time()
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "settings": {"threads": settings.threads, "connections": settings.connections,
                         "duration_s": settings.duration_s, "repeats": args.repeats,
                         "pinned": not args.no_pin, "clk_tck": CLK_TCK, "role_overrides": args.set},
            "machine": _machine(), "loadavg_before": os.getloadavg()}
    columns: list[Column] = []
    capacities: dict[str, list[capacity.CapacityResult]] = {}
    failed = False
    try:
        with ExitStack() as stack:
            backend_conf = workdir / "backend"
            backend_conf.mkdir()
            backend = stack.enter_context(Server(
                "backend", nginx_argv(fill_template("backend.conf", backend_conf / "backend.conf", port=BACKEND_PORT)),
                BACKEND_PORT, backend_conf, cpus=client_cpus))
            probe(BACKEND_PORT)
            direct = Column("direct", "0-byte `return 200` nginx backend, no load balancer")
            columns.append(direct)
            # Every load balancer runs at once (own ports; idle ones cost no
            # CPU), so the rounds can interleave them: a slow minute of the
            # machine then moves every column, not one, and the ratios hold.
            servers: dict[str, Server] = {}
            for target in targets:
                column = Column(target.name, target.note)
                columns.append(column)
                try:
                    conf = target.write_config(workdir, args.set)
                except Exception as exc:  # noqa: BLE001 - a missing/broken role must not hide the other columns
                    column.skipped = f"config not rendered: {exc}"
                    continue
                try:
                    servers[target.name] = stack.enter_context(
                        Server(target.name, target.argv(conf), target.port, conf.parent, cpus=lb_cpus))
                    probe(target.port, target.path)
                except RuntimeError as exc:  # server would not start, or did not answer 200
                    column.skipped = str(exc)
            live = [t for t in targets if t.name in servers and not _column(columns, t.name).skipped]
            warmup = 1.0 if args.quick else 2.0
            for target in live:  # fills upstream pools, lets health checks settle
                measure(target.url, settings, repeats=0, warmup_s=warmup, backend=backend, lb=servers[target.name],
                        cpus=client_cpus)
            meta["rounds"] = _rounds(args, settings, columns, live, servers, backend, client_cpus)
            for target in live:
                if target.capacity and args.capacity:
                    _progress(f"{target.name} capacity")
                    capacities[target.name] = _ladder(target, args.capacity)
    except BaseException:
        failed = True
        print(f"benchmark aborted; server logs are in {workdir}", file=sys.stderr)
        raise
    finally:
        meta["loadavg_after"] = os.getloadavg()
        meta["seconds"] = round(time.time() - started, 1)
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(format_table(columns, settings, meta))
    print(format_ratios(columns, meta.get("rounds", [])))
    print(format_capacity(capacities))
    out = _write_json(meta, columns, capacities)
    print(f"\nresults: {out}")
    return 1 if failed or any(c.skipped for c in columns) else 0


def _column(columns: list[Column], name: str) -> Column:
    return next(c for c in columns if c.name == name)


def _rounds(args, settings, columns, live, servers, backend, client_cpus) -> list[dict]:
    """Interleaved rounds: one wrk run per column per round, in a rotating
    order, until the ratio of every "ours" column to its minimal is known to
    within args.spread (95% interval of the mean, relative), at least
    args.repeats rounds and at most args.max_rounds."""
    direct = _column(columns, "direct")
    order = [None, *live]  # None: the direct column
    history = []
    for n in range(args.max_rounds):
        rotated = order[n % len(order):] + order[:n % len(order)]
        for target in rotated:
            _progress(f"round {n + 1}: {target.name if target else 'direct'}")
            if target is None:
                direct.samples += measure(f"http://127.0.0.1:{BACKEND_PORT}/", settings, repeats=1, warmup_s=0,
                                          backend=backend, lb=None, cpus=client_cpus)
            else:
                _column(columns, target.name).samples += measure(
                    target.url, settings, repeats=1, warmup_s=0, backend=backend, lb=servers[target.name],
                    cpus=client_cpus)
        spreads = ratio_spreads(columns)
        history.append({"round": n + 1, "spreads": spreads})
        if n + 1 >= args.repeats and all(v["spread"] < args.spread for v in spreads.values()):
            break
    return history


def _ladder(target, levels: list[int], refine_steps: int = 4) -> list[capacity.CapacityResult]:
    """Try each connection count in turn until one has errors, then bisect
    between the last clean count and that one (a few steps, so the run stays
    bounded) to narrow down the most the target holds."""
    results = []
    good = 0
    for n in levels:
        result = capacity.hold(target.port, n, path=target.path)
        results.append(result)
        if not result.ok:
            bad = n
            break
        good = n
    else:
        return results
    for _ in range(refine_steps):
        n = (good + bad) // 2
        if bad - good <= max(100, bad // 50):
            break
        result = capacity.hold(target.port, n, path=target.path)
        results.append(result)
        good, bad = (n, bad) if result.ok else (good, n)
    return results


def _progress(what: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def _machine() -> dict:
    def version(argv: list[str]) -> str:
        run = subprocess.run(argv, capture_output=True, text=True)
        return (run.stdout + run.stderr).splitlines()[0].strip()
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "nginx": version(["nginx", "-v"]), "haproxy": version(["haproxy", "-v"]),
            "wrk": version(["wrk", "-v"])}


def _write_json(meta: dict, columns: list[Column], capacities: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{meta['started'].replace(':', '')}.json"
    data = meta | {"columns": [c.to_json() for c in columns],
                   "capacity": {name: [vars(r) | {"errors": dict(r.errors)} for r in results]
                                for name, results in capacities.items()}}
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
