"""The soak's judging, offline: its gate file is checked before any load,
its schedule is the seed's, and its verdicts (failures per fault, alerts
fired and cleared, memory and descriptor trends) follow the record."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from soak import judge
from soak.faults import CATALOGUE, Injection
from soak.gates import DEFAULT, GateError, load
from soak.resources import Series, slope_per_hour
from soak.run import schedule
from tests.kit import ROOT

GATES = load(DEFAULT, set(CATALOGUE))


def test_the_gate_file_names_every_fault_and_reads_its_durations():
    assert set(GATES.faults) == set(CATALOGUE)
    assert GATES.faults["backend-kill"].alerts == ("BackendInstanceDown", "HAProxyServerDown")
    assert GATES.recovery_s == 15


@pytest.mark.parametrize(("change", "named"), [
    (('hold = "30s"', 'hold = "30 seconds"'), "[faults.backend-kill]: hold"),
    (("[faults.lb-reload]\n", "[faults.lb-reload]\nholds = 3\n"), "[faults.lb-reload] holds: unknown key"),
    (("[faults.canary-step]", "[faults.canary-stepp]"), "[faults.canary-stepp]: no such fault"),
    (("rss_mb_per_hour = 16", "rss_mb_per_hour = -1"), "rss_mb_per_hour: must be a number of at least 0"),
])
def test_a_bad_gate_file_is_refused_naming_the_key(tmp_path, change, named):
    bad = tmp_path / "gates.toml"
    bad.write_text(DEFAULT.read_text().replace(*change, 1))
    with pytest.raises(GateError, match=re.escape(named)):
        load(bad, set(CATALOGUE))


def test_the_schedule_is_the_seeds_and_every_round_holds_every_fault_once():
    names = list(CATALOGUE)
    assert schedule(names, 7) == schedule(names, 7)
    assert schedule(names, 7) != schedule(names, 8)
    order = schedule(names, 7)
    for start in range(0, 5 * len(names), len(names)):
        assert sorted(order[start:start + len(names)]) == sorted(names)


def test_a_slope_is_per_hour_and_a_new_process_starts_a_new_life():
    assert slope_per_hour([(t, 100 + t / 60) for t in range(0, 600, 5)]) == pytest.approx(60)
    series = Series("backend-2", "backend")
    # A process that grew by 1 MB a minute for 10 minutes, then a short new life
    # far below it: the step between the two lives is no leak.
    series.samples = [[t, (100 + t / 60) * 2**20, 10, 1.0] for t in range(0, 600, 5)]
    series.samples += [[t, 50 * 2**20, 10, 2.0] for t in range(600, 700, 5)]
    life = series.longest_life()
    assert {s[3] for s in life} == {1.0}
    assert slope_per_hour([(s[0], s[1] / 2**20) for s in life]) == pytest.approx(60)


def _event(fault: str, start: float, injected: float, recovering: float, recovered: float) -> Injection:
    return Injection(fault, start, injected=injected, recovering=recovering, recovered=recovered)


def test_each_failure_counts_against_the_fault_whose_window_holds_it():
    events = [_event("lb-reload", 100, 101, 110, 112), _event("backend-kill", 130, 131, 160, 170)]
    summary = {"timeline": [[s, 10, 0, 0] for s in range(90, 200)],
               "failure_log": [[105.0, "api", "/api/x", "reset", "edge-1/nginx"],
                               [140.0, "api", "/api/y", "reset", "vip/haproxy"],
                               [141.0, "api", "/api/y", "reset", "vip/haproxy"]]}
    judge.windows(events, summary, load_end=200)
    assert [(e.requests, e.failures) for e in events] == [(300, 1), (700, 2)]
    assert events[1].failures_by_target == {"vip/haproxy": 2}
    events[1].bound = 1
    assert events[0].ok is False and events[1].ok is False
    events[1].bound = 2
    events[0].bound = 1
    assert events[0].ok and events[1].ok


def test_failures_on_what_a_fault_takes_down_are_counted_apart():
    event = _event("lb-stop-holder", 100, 101, 130, 135)
    event.excluded = ["edge-1/haproxy"]
    summary = {"timeline": [[s, 10, 0, 0] for s in range(100, 150)],
               "failure_log": [[105.0, "api", "/api/x", "refused", "edge-1/haproxy"],
                               [106.0, "api", "/api/x", "reset", "vip/nginx"]]}
    judge.windows([event], summary, load_end=150)
    assert (event.failures, event.excluded_failures) == (1, 1)
    assert event.failures_by_target == {"vip/nginx": 1}


@pytest.mark.parametrize(("firing", "ok"), [
    (list(range(125, 175, 5)), True),          # fired 14 s after the kill took effect, gone after recovery
    (list(range(150, 160, 5)), False),         # fired 39 s after: past 10 s + 3 scrapes of 5 s
    (list(range(125, 215, 5)), False),         # still firing 30 s after recovery
    ([], False),                               # never fired
])
def test_an_expected_alert_must_fire_in_time_and_clear(firing, ok):
    event = _event("backend-kill", 100, 111, 160, 170)
    event.window_end = 250
    fired = {"BackendInstanceDown": firing, "HAProxyServerDown": list(range(125, 175, 5))}
    judge.alerts([event], fired, {"BackendInstanceDown": 10, "HAProxyServerDown": 10}, GATES, scrape_s=5)
    assert event.alerts["BackendInstanceDown"]["ok"] is ok
    assert event.alerts["HAProxyServerDown"]["ok"]


def test_an_alert_outside_the_faults_that_expect_it_is_reported():
    event = _event("backend-kill", 100, 111, 160, 170)
    event.window_end = 250
    fired = {"BackendInstanceDown": [125.0, 130.0], "RateLimitRejectionsSpiking": [40.0, 45.0]}
    assert judge.unexpected(fired, [event], GATES) == {"RateLimitRejectionsSpiking": 2}


def test_leaks_are_judged_only_on_a_long_run():
    trend = {"span_s": 3500, "samples": 700, "rss_mb_first": 40, "rss_mb_last": 90, "fds_first": 10, "fds_last": 10,
             "rss_mb_per_hour": 50.0, "fds_per_hour": 0.0, "program": "nginx"}
    assert judge.leaks({"edge-1/nginx": trend}, GATES, duration_s=180)["edge-1/nginx"]["ok"]
    long = judge.leaks({"edge-1/nginx": trend}, GATES, duration_s=3600)["edge-1/nginx"]
    assert long["judged"] and not long["ok"]
    # Prometheus's head block grows by design: its own, wider bound.
    head = judge.leaks({"prometheus": trend | {"program": "prometheus"}}, GATES, duration_s=3600)["prometheus"]
    assert head["judged"] and head["ok"]


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "lb-reload,meteor"], "--faults meteor: not a fault"),
    (["--duration", "20s", "--faults", "lb-reload"], "--duration 20s: too short"),
    (["--duration", "an hour"], "--duration: 'an hour' is not a Prometheus duration"),
    (["--users", "0"], "--users 0: must be at least 1"),
])
def test_bad_arguments_are_refused_before_any_load(args, message):
    proc = subprocess.run([sys.executable, "-m", "soak", *args, "--report-dir", "/nonexistent/soak"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
