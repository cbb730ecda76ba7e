"""The progressive canary on the lab, run as an operator runs it (the console
script), under a steady load through both load balancers of edge-1.

- bad: the canary answers 500 from its first step on: rolled back by itself
  within two intervals, no request served by a stable instance fails, and
  the requests the canary failed are bounded by weight x time x rate;
- no traffic: the analysis waits and the rollout pauses instead of
  promoting; `canary-abort` finishes it.

A healthy release (interrupted, resumed, promoted, each step's share
measured) is rolled out through the production-shaped rehearsal inventory
in test_rehearsal.py, on these same nodes.

Intervals are short (15 s): the analysis runs every 5 s, the lab's scrape
period.  Each scenario puts the lab back as it found it (inventory text,
instances, weights).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from haproxy_lab import wait_until_settled
from labkit import INVENTORY, LoadGenerator, backends_put_back, canary_class_loads, node, wait_until
from test_cli_status import CLI, cli, cli_json

from automata_lb import canary, targets

HAPROXY_BACKENDS = ["api", "auth", "websocket", "ai"]
VARS = INVENTORY.parent / "group_vars" / "edge" / "main.yml"
INTERVAL = 15
# The steps of test_rehearsal.py's healthy rollout (why 25% in the middle: there).
STEPS = [10, 25, 100]


@contextmanager
def restored(lab: dict) -> Iterator[targets.Target]:
    for e in lab["edges"]:
        wait_until_settled(node(e["name"]), HAPROXY_BACKENDS)
    with backends_put_back(targets.lab(), lambda: cli("canary-abort", timeout=300)) as target:
        yield target


@pytest.fixture
def lab_restored(lab):
    with restored(lab) as target:
        yield target


def _weights(status: dict) -> dict[tuple[str, str], int]:
    """{(node, load balancer): canary weight} from `canary-status --json`."""
    return {(n, lb): w for n, weights in status["weights"].items() for lb, w in weights.items()}


def _loads(edge: dict, ca_cert: str) -> tuple[LoadGenerator, LoadGenerator]:
    loads = canary_class_loads(edge, ca_cert, max_seconds=600)
    return loads["nginx"], loads["haproxy"]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([CLI, "canary-deploy", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rollout() -> canary.Rollout | None:
    return canary.load("lab")


# --- a bad canary ---------------------------------------------------------------

def test_a_failing_canary_is_rolled_back_by_itself(lab_restored, lab, edge, ca_cert):
    admin = {b["name"]: b["endpoints"]["admin"] for b in lab["backends"]}["canary-1"]
    nginx_load, haproxy_load = _loads(edge, ca_cert)
    with nginx_load, haproxy_load:
        proc = _start("v-bad", "--steps", ",".join(map(str, STEPS)), "--interval", f"{INTERVAL}s")
        wait_until(lambda: (r := _rollout()) and r.release == "v-bad" and r.phase == "stepping", 180)
        fault_at = time.time()
        httpx.put(f"{admin}/fault", json={"error_rate": 1.0, "error_status": 500}, timeout=5).raise_for_status()
        out, _ = proc.communicate(timeout=300)
    rollout = _rollout()
    assert proc.returncode == 1, out[-3000:]
    assert rollout.phase == "rolled-back" and "error ratio" in rollout.reason, rollout.reason
    weight_zero = next(e["time"] for e in rollout.events if e["what"] == "weight" and e["weight"] == 0
                       and e["time"] > fault_at)
    to_rollback = weight_zero - fault_at
    reports = (nginx_load.report, haproxy_load.report)
    failed = [o for r in reports for o in r.outcomes if o.status != "200"]
    rate = sum(len(r.between(fault_at, weight_zero)) for r in reports) / max(to_rollback, 1)
    budget = STEPS[0] / 100 * rate * (to_rollback + 2)
    print(f"rolled back {to_rollback:.1f}s after the fault; the canary failed {len(failed)} requests "
          f"(weight x rate x time = {budget:.0f}); reason: {rollout.reason}")
    # Caught by the analysis that followed the fault, or the one after it
    # (its window may still hold mostly healthy traffic): at most one step
    # passed between the fault and the rollback.
    passed_after_fault = [e for e in rollout.events if e["what"] == "passed" and fault_at < e["time"] < weight_zero]
    assert len(passed_after_fault) <= 1, passed_after_fault
    # Only the canary failed anything (its 500s, and the 503s its own breaker
    # answers once they pile up), and only until its weight went to 0.  The
    # load balancers retry some of them elsewhere, so clients see fewer.
    assert all(o.instance == "canary-1" and o.status.startswith("5") and o.at <= weight_zero + 2 for o in failed), failed[:10]
    assert 0 < len(failed) <= 1.5 * budget + 5
    rollback_event = next(e for e in rollout.events if e["what"] == "rolling-back")
    assert rollback_event["analysis"]["verdict"] == "fail"


# --- no traffic -----------------------------------------------------------------

def test_without_traffic_the_analysis_waits_instead_of_promoting(lab_restored):
    # One analysis without canary traffic is enough to pause: none passes.
    proc = subprocess.run([CLI, "canary-deploy", "v-idle", "--steps", "10,100", "--interval", "5s",
                           "--set", "max_inconclusive=1"], capture_output=True, text=True, timeout=300)
    rollout = _rollout()
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert rollout.phase == "paused" and rollout.step == 0 and rollout.weight == 10
    assert "canary requests" in rollout.reason and not any(e["what"] == "passed" for e in rollout.events)
    _rc, status = cli_json("canary-status")
    assert "paused at step 1 of 2 (10%)" in status["summary"]
    aborted = cli("canary-abort", timeout=300)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert _rollout().phase == "rolled-back"
    _rc, status = cli_json("canary-status")
    weights = _weights(status)
    assert len(weights) == 4 and set(weights.values()) == {0}, weights


# --- edge VMs: the weight alone -------------------------------------------------

def test_on_an_inventory_the_weight_moves_once_the_canary_runs_the_release(lab_restored):
    inventory = ["--inventory", str(INVENTORY.parent)]
    refused = cli(*inventory, "canary-deploy", "v9", "--weight", "30", "--yes")
    assert refused.returncode == 1 and "canary-1 answers 'canary'" in refused.stderr, refused.stderr
    assert set(_weights(cli_json("canary-status")[1]).values()) == {10}   # nothing changed

    moved = cli(*inventory, "canary-deploy", "canary", "--weight", "30", "--yes")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert set(_weights(cli_json("canary-status")[1]).values()) == {30}
    assert "share: 30" in VARS.read_text()

    back = cli(*inventory, "rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert set(_weights(cli_json("canary-status")[1]).values()) == {10}
