"""What monitoring costs the edge: `python -m bench.monitoring_cost`.

On the running lab (`make lab`), drive keep-alive load through edge-1's
NGINX (HTTPS) and HAProxy with wrk, in rounds that alternate between the
lab's Prometheus scraping every tier every few seconds and Prometheus
paused, and read the CPU time of the processes inside edge-1 from /proc.
Prints the load balancers' CPU per proxied request both ways, side by side,
and what mtail, the exporters and Prometheus themselves use.

The target path is /ai/ with no delay: the one class without a per-client
request rate, so every request is proxied (a 429 would be far cheaper).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import psutil

from bench.load import LoadSettings, run_wrk
from lab import stack, topology
from lab.monitoring import ready
from lab.podman import inspect, podman

PATH = "/ai/bench?seconds=0"
LB_PROCESSES = {"nginx": "nginx", "haproxy": "haproxy"}
HELPERS = ("mtail", "prometheus-node-exporter", "prometheus-nginx-exporter")


def _tree(container: str) -> list[psutil.Process]:
    root = psutil.Process(inspect(container)["State"]["Pid"])
    return [root, *root.children(recursive=True)]


def _cpu_seconds(processes: list[psutil.Process], name: str) -> float:
    total = 0.0
    for p in processes:
        try:
            if p.name() == name or (p.cmdline()[:1] and p.cmdline()[0].endswith(name)):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class Round:
    scraping: bool
    lb: str
    requests: int
    lb_us_per_request: float
    helpers_us_per_request: dict[str, float]


def _set_scraping(container: str, on: bool) -> None:
    podman("unpause" if on else "pause", container, check=False)
    if on:
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus did not come back after unpause")
            time.sleep(0.2)


def run(rounds: int, seconds: float, connections: int) -> tuple[list[Round], dict]:
    lab = json.loads(stack.LAB_JSON.read_text())
    edge = lab["edges"][0]
    urls = {"nginx": edge["endpoints"]["nginx_https"] + PATH, "haproxy": edge["endpoints"]["haproxy_http"] + PATH}
    prometheus = lab["prometheus"]["container"]
    processes = _tree(edge["container"])
    prom_process = _tree(prometheus)[0]
    prom_cpu_start, prom_started = sum(prom_process.cpu_times()[:2]), time.monotonic()
    results: list[Round] = []
    settings = LoadSettings(threads=2, connections=connections, duration_s=seconds)
    try:
        for i in range(rounds):
            # on, off, off, on, on, off...: drift in the machine's load hits both alike.
            scraping = (i % 4) in (0, 3)
            _set_scraping(prometheus, scraping)
            for lb, url in urls.items():
                before = {n: _cpu_seconds(processes, n) for n in (LB_PROCESSES[lb], *HELPERS)}
                wrk = run_wrk(url, settings)
                after = {n: _cpu_seconds(processes, n) for n in before}
                if wrk.error_count:
                    raise RuntimeError(f"{lb}: wrk saw errors {wrk.errors}; is the lab converged?")
                per = {n: (after[n] - before[n]) / wrk.requests * 1e6 for n in before}
                results.append(Round(scraping, lb, wrk.requests, per.pop(LB_PROCESSES[lb]), per))
    finally:
        _set_scraping(prometheus, True)
    elapsed = time.monotonic() - prom_started
    prom = {"cpu_percent": 100 * (sum(prom_process.cpu_times()[:2]) - prom_cpu_start) / elapsed,
            "rss_mib": prom_process.memory_info().rss / 2**20}
    return results, prom


def report(results: list[Round], prom: dict) -> str:
    lines = ["| load balancer | scraping | rounds | requests | LB CPU µs/req (median) | spread |",
             "|---|---|---|---|---|---|"]
    medians = {}
    for lb in LB_PROCESSES:
        for scraping in (False, True):
            rows = [r for r in results if r.lb == lb and r.scraping == scraping]
            values = [r.lb_us_per_request for r in rows]
            medians[lb, scraping] = statistics.median(values)
            spread = (max(values) - min(values)) / medians[lb, scraping] * 100
            lines.append(f"| {lb} | {'every ' + str(topology.SCRAPE_INTERVAL_SECONDS) + ' s' if scraping else 'paused'} "
                         f"| {len(rows)} | {sum(r.requests for r in rows):,} | {medians[lb, scraping]:.1f} | {spread:.0f}% |")
    lines.append("")
    for lb in LB_PROCESSES:
        delta = (medians[lb, True] / medians[lb, False] - 1) * 100
        lines.append(f"{lb}: scraping changes CPU per request by {delta:+.1f}%")
    mtail = statistics.median(r.helpers_us_per_request["mtail"] for r in results if r.lb == "nginx")
    lines.append(f"mtail: {mtail:.1f} µs of CPU per NGINX request (it reads the access log)")
    for name in HELPERS[1:]:
        per = statistics.median(r.helpers_us_per_request[name] for r in results if r.scraping)
        lines.append(f"{name}: {per:.2f} µs per request while scraped (CPU spent on scrapes, spread over the load)")
    lines.append(f"prometheus: {prom['cpu_percent']:.1f}% of one core on average over the run, "
                 f"{prom['rss_mib']:.0f} MiB resident")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds, alternating scraping on and off (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk duration per load balancer per round")
    parser.add_argument("--connections", type=int, default=20, help="keep-alive connections (default 20)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (one with scraping, one without)")
    results, prom = run(args.rounds, args.seconds, args.connections)
    print(report(results, prom))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
