"""Smoke test of `python -m bench.balancer` (docs/client-load-balancing.md).

Not a benchmark: no number is asserted.  One short run proves the command
still starts its backends, drives every strategy in both scenarios and
prints a complete table, so a broken benchmark shows up in CI instead of on
the day someone needs the numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import balancer

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ("round_robin", "least_outstanding", "p2c_ewma")


def test_a_short_run_reports_every_strategy_in_both_scenarios():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.balancer", "--quick", "--json", "--duration", "0.5", "--saturated", "0.3",
         "--warmup", "0.1", "--rate", "100", "--picks", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    rows = {(r["scenario"], r["strategy"]): r for r in result["runs"]}
    assert set(rows) == {(s, k) for s in ("all healthy", "one slow") for k in STRATEGIES}
    for row in rows.values():
        assert row["calls"] > 0 and row["max_rate"] > 0
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
    # Only the slowed backend can be counted as "slow".
    assert all(rows[("all healthy", k)]["to_slow"] == 0 for k in STRATEGIES)
    assert rows[("one slow", "round_robin")]["to_slow"] > 0
    overhead = result["pick_us"]["3 endpoints"]
    assert set(overhead) == {*STRATEGIES, "consistent_hash"}
    assert set(result["pick_us"]) == {"3 endpoints", "30 endpoints"}

    # The printed table: a row per run, then the verdict on each goal.
    runs = [balancer.Run(**r) for r in result["runs"]]
    table = balancer.format_runs(runs, rate=100, callers=16).splitlines()
    for scenario, strategy in rows:
        assert sum(line.startswith(scenario) and strategy in line for line in table) == 1, (scenario, strategy)
    verdict = balancer.verdict(runs, {k: (v["pick"], v["pick_and_bookkeeping"]) for k, v in overhead.items()})
    assert [line.split()[0] for line in verdict] == ["p2c_ewma", "round_robin", "slowest"]
