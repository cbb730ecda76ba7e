"""The load tests (load_tests/) against the lab: a short run of each
scenario through each balancer, the gates failing a run where a backend
answers 500, the auth limit's 429s counted apart from failures, and the
fault drill within its bounds.

Every run is `python -m load_tests` as an operator types it, in a child
process (Locust monkey-patches the process it runs in), and the tests read
what it wrote: summary.json, Locust's own CSV, drill.json.  Latency gates
are not asserted here (tests make no wall-clock claims); what the lab holds
is measured by the load tests themselves (docs/load-tests.md).

The clean scenario runs go in parallel (light loads, seconds each) so the
file stays near a minute and a quarter; `make test-long` runs the full drill
(adds a graceful drain and a second return, ~30 s more).  Where HAProxy does
not resolve clients from the trusted X-Forwarded-For, its runs other than
the API one are skipped, saying so.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from haproxy_lab import runtime, server_states, wait_until_settled
from labkit import ROOT, ClientIPs, node

from automata_lb import targets
from automata_lb.edge import haproxy_canary_share, stat_rows

pytestmark = pytest.mark.usefixtures("trusted_gateway")

RUN_TIME = "8s"
# Users per short run.  Where a balancer keys affinity on the client (NGINX
# ip_hash on the client's /24, HAProxy's sticky WebSockets; each simulated
# user is its own client), 30 users leave a given instance out with
# probability (2/3)^30, so "every instance" is no dice.
USERS = {"api": 10, "websocket": 30, "ai": 10, "auth": 30, "mixed": 40}
TARGETS = ("nginx", "haproxy")
# Where HAProxy does not resolve clients from the trusted X-Forwarded-For,
# every simulated user is one client to it: only the API scenario, with few
# enough users to stay under that one client's API limit, means anything.
HAPROXY_SHARED_CLIENT_USERS = 5
VICTIM = "backend-2"


class Run:
    """One `python -m load_tests` run and what it wrote."""

    def __init__(self, rc: int, directory: Path, output: str) -> None:
        self.rc, self.dir, self.output = rc, directory, output

    @property
    def summary(self) -> dict:
        path = self.dir / "summary.json"
        assert path.exists(), f"no summary.json (exit {self.rc}):\n{self.output[-3000:]}"
        return json.loads(path.read_text())

    def gate(self, name: str) -> dict:
        return next(g for g in self.summary["gates"] if g["gate"] == name)

    def stats(self) -> dict[str, dict]:
        """Locust's own per-entry CSV, keyed by "<type> <name>"."""
        with open(self.dir / "locust_stats.csv", newline="") as f:
            return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(f)}

    def instances(self) -> set[str]:
        return {i for per_class in self.summary["instances"].values() for i in per_class}


def load_test(reports: Path, run_id: str, *args: str, timeout: float = 300) -> Run:
    proc = subprocess.run([sys.executable, "-m", "load_tests", "--quiet", "--report-dir", str(reports),
                           "--run-id", run_id, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, reports / run_id, proc.stdout + proc.stderr)


def haproxy_pools(host) -> list[str]:
    rows = stat_rows(runtime(host, "show stat"))
    return sorted({r["pxname"] for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")})


@pytest.fixture(scope="module")
def settled(lab):
    """Every HAProxy server UP at full weight on both nodes: an earlier test
    may have taken one out, and a short run would then miss it."""
    for edge in lab["edges"]:
        host = node(edge["name"])
        wait_until_settled(host, haproxy_pools(host))


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("load")


def haproxy_resolves_clients(edge: dict) -> bool:
    """Does HAProxy key its per-client limits on the address in a trusted
    X-Forwarded-For?  More API requests within a second than one client may
    send, each from another address: all served only if it does."""
    ips = ClientIPs()
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        return all(client.get("/api/load-test-probe", headers={"x-forwarded-for": ips.take()}).status_code != 429
                   for _ in range(25))


@pytest.fixture(scope="module")
def haproxy_per_client(edge, settled) -> bool:
    return haproxy_resolves_clients(edge)


def needs_clients(target: str, scenario: str, per_client: bool) -> None:
    if target == "haproxy" and scenario != "api" and not per_client:
        pytest.skip("HAProxy counts every simulated user as one client (it does not resolve the trusted "
                    "X-Forwarded-For): its limits and WebSocket affinity see a single client")


@pytest.fixture(scope="module")
def clean_runs(reports, settled, haproxy_per_client) -> dict[tuple[str, str], Run]:
    """A short run of every scenario through each balancer: one balancer's
    at once (light loads; nothing is disturbed meanwhile).  Not both: ten
    generators on two cores slowed each answer so much that a burst of
    logins, sent one after another, no longer outran the auth limit."""
    runs = {}
    for target in TARGETS:
        jobs = {}
        for scenario, users in USERS.items():
            if target == "haproxy" and not haproxy_per_client:
                if scenario != "api":
                    continue
                users = HAPROXY_SHARED_CLIENT_USERS
            jobs[(target, scenario)] = ["--scenario", scenario, "--target", target, "--users", str(users),
                                        "--spawn-rate", str(users), "--run-time", RUN_TIME]
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = {key: pool.submit(load_test, reports, "-".join(key), *args) for key, args in jobs.items()}
            runs |= {key: future.result() for key, future in futures.items()}
    return runs


RUNS = [(t, s) for t in TARGETS for s in USERS]


# --- the scenarios ------------------------------------------------------------------

@pytest.mark.parametrize(("target", "scenario"), RUNS)
def test_scenario_reaches_every_stable_instance(clean_runs, target, scenario, stable_backends, haproxy_per_client):
    needs_clients(target, scenario, haproxy_per_client)
    run = clean_runs[(target, scenario)]
    stable = {b["name"] for b in stable_backends}
    assert stable <= run.instances(), (run.summary["instances"], run.output[-2000:])


@pytest.mark.parametrize(("target", "scenario"), RUNS)
def test_scenario_runs_without_failures(clean_runs, target, scenario, haproxy_per_client):
    needs_clients(target, scenario, haproxy_per_client)
    run = clean_runs[(target, scenario)]
    summary = run.summary
    assert summary["requests"] > 0
    assert summary["failures"] == 0, summary["failure_examples"]
    assert run.gate("max_failure_ratio")["ok"]


def test_reports_hold_locust_csv_html_and_the_summary(clean_runs):
    run = clean_runs[("nginx", "mixed")]
    summary = run.summary
    aggregated = run.stats()["Aggregated"]
    # Our summary and Locust's own CSV count the same requests.
    assert int(aggregated["Request Count"]) == summary["requests"]
    assert "<html" in (run.dir / "report.html").read_text()[:2000].lower()
    for cls in ("api", "auth", "ws_connect", "ws_message", "ai_first_byte", "ai_total"):
        stats = summary["classes"][cls]
        assert stats["requests"] > 0, cls
        # (Locust keeps times above 100 ms to two significant digits, so a
        # percentile may round above the exact maximum.)
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] and stats["max"] > 0, (cls, stats)
    text = (run.dir / "summary.txt").read_text()
    assert "answers per backend instance" in text and "gates [mixed]" in text
    assert summary["generator"]["cpu_mean_pct"] > 0


@pytest.mark.parametrize("target", TARGETS)
def test_websocket_connect_and_round_trip_are_entries_of_their_own(clean_runs, target, haproxy_per_client):
    needs_clients(target, "websocket", haproxy_per_client)
    stats = clean_runs[(target, "websocket")].stats()
    connects, messages = stats["WS /ws connect"], stats["WS /ws message"]
    assert int(connects["Failure Count"]) == int(messages["Failure Count"]) == 0
    # Several checked echoes per session, many sessions per user.
    assert int(messages["Request Count"]) > 5 * int(connects["Request Count"]) > 5 * USERS["websocket"]


@pytest.mark.parametrize("target", TARGETS)
def test_ai_first_byte_and_total_time_are_recorded_separately(clean_runs, target, haproxy_per_client):
    needs_clients(target, "ai", haproxy_per_client)
    stats = clean_runs[(target, "ai")].stats()
    first, total = stats["GET /ai/stream first byte"], stats["GET /ai/stream"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    # Every stream that answered has both entries, except the streams the
    # end of the run cut short (at most one per user).
    assert 0 <= int(first["Request Count"]) - int(total["Request Count"]) <= USERS["ai"]
    assert float(first["Median Response Time"]) < float(total["Median Response Time"])


@pytest.mark.parametrize("target", TARGETS)
def test_auth_bursts_meet_the_limit_and_429s_are_not_failures(clean_runs, target, haproxy_per_client):
    needs_clients(target, "auth", haproxy_per_client)
    run = clean_runs[(target, "auth")]
    summary = run.summary
    assert summary["rate_limited"] > 0
    assert summary["classes"]["auth"]["failures"] == 0
    limited = run.stats()["POST /auth/login [429]"]
    assert int(limited["Request Count"]) > 0 and int(limited["Failure Count"]) == 0
    assert run.gate("max_failure_ratio")["ok"], run.gate("max_failure_ratio")
    assert run.gate("min_rate_limited_ratio")["ok"], run.gate("min_rate_limited_ratio")


# --- the gates ------------------------------------------------------------------------

def test_gates_fail_a_run_where_a_backend_answers_500(reports, clean_runs, fault):
    # (after the clean runs: the fault must not leak into them)
    fault(VICTIM, error_rate=1.0, error_status=500)
    run = load_test(reports, "fault-500", "--scenario", "api", "--target", "nginx",
                    "--users", "10", "--spawn-rate", "10", "--run-time", RUN_TIME)
    assert run.rc == 1, run.output[-3000:]
    assert not run.gate("max_failure_ratio")["ok"]
    assert any(f"HTTP 500 from {VICTIM}" in error for error, _ in run.summary["failure_examples"])
    assert "RESULT: FAIL" in run.output


def test_bad_arguments_and_gate_files_are_refused_before_any_load(reports, tmp_path):
    run = load_test(reports, "bad-users", "--users", "0")
    assert run.rc == 2 and "--users 0" in run.output
    bad = tmp_path / "gates.toml"
    bad.write_text('[api]\nmax_failure_ratio = 0.001\n[api.latency_ms]\napi = {p95 = "fast"}\n')
    run = load_test(reports, "bad-gates", "--scenario", "api", "--gates", str(bad))
    assert run.rc == 2 and "api.latency_ms.api.p95" in run.output
    assert not (reports / "bad-users").exists() and not (reports / "bad-gates").exists()


# --- the fault drill ---------------------------------------------------------------------

def test_fault_drill_stays_within_its_bounds_and_restores_the_lab(reports, clean_runs, settled, lab, long_form):
    edges = targets.lab().edges
    canary_before = [haproxy_canary_share(n) for n in edges]
    args = ["--drill", "full" if long_form else "quick", "--target", "nginx,haproxy", "--victim", VICTIM,
            "--users", "30", "--spawn-rate", "30"]
    run = load_test(reports, "drill", *args, timeout=600)
    drill_json = run.dir / "drill.json"
    assert drill_json.exists(), run.output[-4000:]
    drill = json.loads(drill_json.read_text())
    events = {e["name"].split(" ")[0]: e for e in drill["events"]}
    print("\n" + (run.dir / "drill.txt").read_text())

    assert {"baseline", "reload", "canary", "kill", "bring"} <= events.keys()
    assert sum(e["name"].startswith("reload") for e in drill["events"]) == 2  # nginx and haproxy
    for event in drill["events"]:
        assert event["requests"] > 0, event  # the load ran through every window
        assert event["failures"] <= event["bound"], event
        if not event["name"].startswith("kill"):
            assert event["bound"] == 0, event  # hitless by design
    assert run.rc == 0, run.output[-4000:]

    # Everything is back: the victim serves behind HAProxy on every node,
    # the canary share is what it was.
    for host in (node(e["name"]) for e in lab["edges"]):
        assert all(s[VICTIM].status == "UP" for pool in haproxy_pools(host)
                   if VICTIM in (s := server_states(host, pool)))
    assert [haproxy_canary_share(n) for n in edges] == canary_before
    ok = httpx.get(f"{lab['edges'][0]['endpoints']['nginx_https']}/api/after-drill", verify=lab["credentials"]["ca_cert"],
                   headers={"x-forwarded-for": ClientIPs().take()}, timeout=10)
    assert ok.status_code == 200
