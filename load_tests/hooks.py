"""What a run records beyond Locust's own statistics, and what it does at
the end: the summary, the gates and the exit code.

Imported by the locustfile, so it works the same under
`python -m load_tests` and a plain `locust -f load_tests/locustfile.py`.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import gevent
import psutil
from locust import events
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from load_tests import gates as gates_mod
from load_tests.summary import RATE_LIMITED, class_stats, format_summary, traffic_class
from load_tests.targets import lab_ca_cert, load_lab

log = logging.getLogger("load_tests")

# Failures kept with their time for the fault drill's per-event windows;
# beyond this a run is failing anyway, and the counts stay exact.
MAX_FAILURE_LOG = 20000
# Latency per target is kept per bucket of this many seconds: a soak's
# timeline draws its p99 from them (an hour: 360 points per target).
LATENCY_BUCKET_S = 10


class Recorder:
    """Per-run counters that Locust's statistics do not keep."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = self.stopped = None
        self.instances: dict[str, Counter] = defaultdict(Counter)
        self.per_target: dict[str, Counter] = defaultdict(Counter)
        self.failure_log: list[tuple[float, str, str, str, str]] = []
        self.errors: Counter = Counter()
        self.timeline: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.target_timeline: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
        self.latency: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.user_seconds = 0.0
        self.peak_users = 0
        self.cpu: list[float] = []
        self.machine_cpu: list[float] = []
        self.ws_going_away = 0

    def request(self, name: str, exception, context: dict | None, response, response_time: float = 0.0) -> None:
        now = time.time()
        cls = traffic_class(name)
        context = context or {}
        limited = name.endswith(RATE_LIMITED)
        target = context.get("target", "")
        tick = self.timeline[int(now)]
        target_tick = self.target_timeline[target][int(now)]
        tick[0] += 1
        target_tick[0] += 1
        self.per_target[target]["requests"] += 1
        if limited:
            tick[2] += 1
            target_tick[2] += 1
            self.per_target[target]["rate_limited"] += 1
        elif exception is not None:
            tick[1] += 1
            target_tick[1] += 1
            self.per_target[target]["failures"] += 1
            error = f"{name}: {exception}"
            self.errors[error] += 1
            if len(self.failure_log) < MAX_FAILURE_LOG:
                self.failure_log.append((now, cls, name, str(exception), target))
        instance = context.get("instance")
        if instance is None and response is not None and not limited:
            headers = getattr(response, "headers", None)
            instance = headers.get("x-backend-instance") if headers else None
        if instance and exception is None and not limited:
            self.instances[cls][instance] += 1
        if exception is None and not limited and cls in ("api", "auth"):
            # The interactive classes: WebSockets and AI streams last by design.
            self.latency[target][int(now) // LATENCY_BUCKET_S * LATENCY_BUCKET_S].append(response_time)


recorder = Recorder()
# The run's settings, filled at init from Locust's parsed options.
run: dict = {}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    group = parser.add_argument_group("automata load tests (docs/load-tests.md)")
    group.add_argument("--scenario", default="", help="gates to judge the run by (default: from the user classes run)")
    group.add_argument("--gates", default=str(gates_mod.DEFAULT_GATES), help="SLO gate file (TOML)")
    group.add_argument("--report-dir", default="", help="write summary.json / summary.txt here")
    group.add_argument("--ca-cert", default="", help="extra CA to trust (default: the lab's CA when the lab is up)")
    group.add_argument("--no-forwarded-for", action="store_true",
                       help="do not send a per-user X-Forwarded-For client address")
    group.add_argument("--target-names", default="",
                       help="comma-separated labels for the comma-separated --host URLs (reports)")


def scenario_of(class_names: set[str]) -> str | None:
    return next((s for s, classes in gates_mod.SCENARIOS.items() if set(classes) == class_names), None)


@events.init.add_listener
def _init(environment, **_kw) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library without Locust's argument parser
        return
    names = {cls.__name__ for cls in environment.user_classes}
    scenario = options.scenario or scenario_of(names)
    try:
        all_gates = gates_mod.load(options.gates)
        gates = gates_mod.for_scenario(all_gates, scenario, options.gates) if scenario else None
    except gates_mod.GateError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    if gates is None:
        log.warning("user classes %s are no scenario of %s: the run is not gated",
                    sorted(names), ", ".join(gates_mod.SCENARIOS))
    ca = options.ca_cert or lab_ca_cert(load_lab()) or ""
    if options.ca_cert and not Path(options.ca_cert).exists():
        log.error("--ca-cert %s: no such file", options.ca_cert)
        raise SystemExit(2)
    hosts = [h.strip() for h in (environment.host or "").split(",") if h.strip()]
    labels = [n.strip() for n in options.target_names.split(",")] if options.target_names else hosts
    if len(labels) != len(hosts):
        log.error("--target-names: %d names for %d --host URLs", len(labels), len(hosts))
        raise SystemExit(2)
    # gevent's timers count from the loop's cached clock, which has not
    # moved while Locust imported and set up: without a fresh clock the
    # --run-time timer fires early by the start-up time (seconds on a busy
    # machine, all of a short run).
    gevent.get_hub().loop.update_now()
    # SIGUSR1 ends the load like --run-time does: the HTML report, the CSV
    # and the summary are all written (the fault drill stops its load so).
    gevent.signal_handler(signal.SIGUSR1, lambda: environment.runner and environment.runner.quit())
    run.update(targets=[{"name": n, "url": h} for n, h in zip(labels, hosts, strict=True)],
               scenario=scenario or "custom", gates=gates, report_dir=options.report_dir, ca_cert=ca,
               forwarded_for=not options.no_forwarded_for)


def _sample_cpu(environment) -> None:
    """Once a second: Locust's own CPU (one core at most: gevent is one
    thread), the machine's, and users alive, for user-seconds."""
    me = psutil.Process()
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    last = time.monotonic()
    while True:
        gevent.sleep(1.0)
        now = time.monotonic()
        users = environment.runner.user_count if environment.runner else 0
        recorder.user_seconds += users * (now - last)
        recorder.peak_users = max(recorder.peak_users, users)
        last = now
        recorder.cpu.append(me.cpu_percent(None))
        recorder.machine_cpu.append(psutil.cpu_percent(None))


_sampler: list = []


@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    recorder.reset()
    recorder.started = time.time()
    _sampler.append(gevent.spawn(_sample_cpu, environment))


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_kw) -> None:
    # The fault drill waits for the full load before its first event.
    if run.get("report_dir"):
        Path(run["report_dir"], "spawned.json").write_text(json.dumps({"at": time.time(), "users": user_count}))


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:
    recorder.stopped = time.time()
    while _sampler:
        _sampler.pop().kill(block=False)


@events.request.add_listener
def _request(name, exception=None, context=None, response=None, response_time=0.0, **_kw) -> None:
    recorder.request(name, exception, context, response, response_time or 0.0)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def build_summary(environment) -> dict:
    stats = environment.stats
    started = recorder.started or stats.start_time
    stopped = recorder.stopped or time.time()
    duration = max(stopped - started, 1e-9)
    total = stats.total
    limited = sum(e.num_requests for e in stats.entries.values() if e.name.endswith(RATE_LIMITED))
    user_seconds = recorder.user_seconds or duration * max(recorder.peak_users, 1)
    cpu = recorder.cpu or [0.0]
    machine = recorder.machine_cpu or [0.0]
    return {
        "scenario": run.get("scenario", "custom"),
        "targets": run.get("targets", []),
        "peak_users": recorder.peak_users,
        "started": started, "stopped": stopped, "duration_s": duration,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rate_limited": limited,
        "rps": total.num_requests / duration,
        "rps_per_user": total.num_requests / user_seconds if user_seconds else 0.0,
        "classes": class_stats(stats),
        "instances": {cls: dict(sorted(c.items())) for cls, c in sorted(recorder.instances.items())},
        "per_target": {t: {k: c[k] for k in ("requests", "failures", "rate_limited")}
                       for t, c in recorder.per_target.items()},
        "ws_going_away": recorder.ws_going_away,
        "generator": {"cpu_mean_pct": sum(cpu) / len(cpu), "cpu_max_pct": max(cpu),
                      "machine_cpu_mean_pct": sum(machine) / len(machine), "cpus": psutil.cpu_count()},
        "failure_examples": recorder.errors.most_common(10),
        "failure_log": recorder.failure_log,
        "timeline": sorted([t, *v] for t, v in recorder.timeline.items()),
        # Per target: [second, requests, failures, rate limited], and the
        # p99 (ms) of the interactive classes per LATENCY_BUCKET_S seconds.
        "target_timeline": {t: sorted([s, *v] for s, v in seconds.items())
                            for t, seconds in recorder.target_timeline.items()},
        "target_p99_ms": {t: sorted([b, round(_p99(v), 1)] for b, v in buckets.items() if v)
                          for t, buckets in recorder.latency.items()},
    }


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    if not run or recorder.started is None:
        return  # nothing ran (e.g. the web UI was opened and closed)
    try:
        _report(environment)
    except Exception:
        # Locust would log this and exit 0: a run without its verdict must not pass.
        log.exception("could not write the summary")
        if run.get("report_dir"):
            Path(run["report_dir"], "summary-error.txt").write_text(traceback.format_exc())
        environment.process_exit_code = 2


def _final_csv(environment) -> None:
    """Locust rewrites its per-entry CSVs once a second, so the last write
    can miss the last second of the run; write them once more from the
    final statistics, so the CSV and the summary count the same requests."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    table = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("stats", table.requests_csv), ("failures", table.failures_csv),
                          ("exceptions", table.exceptions_csv)):
        with open(f"{prefix}_{suffix}.csv", "w", newline="") as f:
            write(csv.writer(f))


def _report(environment) -> None:
    _final_csv(environment)
    summary = build_summary(environment)
    gates = run.get("gates")
    results = gates_mod.evaluate(summary, gates) if gates else None
    summary["gates"] = [r.as_dict() for r in results] if results is not None else None
    summary["passed"] = all(r.ok for r in results) if results is not None else None
    text = format_summary(summary, results)
    print("\n" + text, flush=True)
    if run.get("report_dir"):
        out = Path(run["report_dir"])
        (out / "summary.txt").write_text(text + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    # The gates, not Locust's "any failure at all", decide the exit status.
    environment.process_exit_code = 0 if summary["passed"] in (True, None) else 1
