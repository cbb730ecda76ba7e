"""The progressive canary without a lab: the analysis (thresholds, verdicts,
queries checked by promtool), the rollout's phases driven by a recorded
tier and scripted Prometheus answers, the one-rollout lock, and a stack's
steps rendered offline.  tests/lab/test_cli_canary.py runs it for real."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from automata_lb import backend_changes, canary, cli
from automata_lb import stack as stack_ops
from automata_lb.prom import PrometheusError
from automata_lb.targets import ROOT
from infra import offline
from monitoring import canary_analysis as ca

ANALYSIS = ca.load()


# --- thresholds ----------------------------------------------------------------

def test_defaults_load_and_every_threshold_can_be_overridden(tmp_path):
    extra = tmp_path / "strict.yml"
    extra.write_text("error_ratio: {max: 0.001}\nlatency_p99: {max: 250ms}\n")
    a = ca.load(extra, ["min_requests=20", "error_ratio.max_vs_stable=1.5"])
    assert (a.error_ratio.max, a.latency_p99.max, a.min_requests, a.error_ratio.max_vs_stable) == (0.001, 0.25, 20, 1.5)
    assert a.error_ratio.floor == ANALYSIS.error_ratio.floor  # untouched keys keep their defaults


@pytest.mark.parametrize("sets, key, reason", [
    (["error_ratio.max=1.5"], "error_ratio.max", "between 0 and 1"),
    (["latency_p99.max=1"], "latency_p99.max", "not a duration"),
    (["min_requests=0"], "min_requests", "whole number >= 1"),
    (["error_ratio.ceiling=0.1"], "error_ratio.ceiling", "unknown key"),
    (["latency_p99.max_vs_stable=0.5"], "latency_p99.max_vs_stable", "at least 1"),
    (["check_every"], "check_every", "KEY=VALUE"),
])
def test_a_bad_threshold_is_refused_naming_it(sets, key, reason):
    with pytest.raises(ca.AnalysisError) as exc:
        ca.load(sets=sets)
    assert exc.value.key == key and reason in str(exc.value)


def test_recorded_thresholds_come_back_as_they_were():
    assert ca.from_dict(ANALYSIS.as_dict()) == ANALYSIS


# --- verdicts ------------------------------------------------------------------

def figures(canary_n=200, canary_errors=0, canary_p99=0.02, stable_n=1800, stable_errors=0, stable_p99=0.02):
    return {"canary_requests": canary_n, "canary_errors": canary_errors, "canary_p99": canary_p99,
            "stable_requests": stable_n, "stable_errors": stable_errors, "stable_p99": stable_p99}


def test_too_few_canary_requests_is_no_verdict_even_when_all_failed():
    result = ca.judge(ANALYSIS, figures(canary_n=10, canary_errors=10), 30)
    assert result.verdict == "wait" and "10 of 50" in result.reason


@pytest.mark.parametrize("given, verdict, failed", [
    (figures(), "pass", []),
    (figures(canary_errors=10), "fail", ["error ratio <= max", "error ratio <= 2 x stable"]),   # 5%
    (figures(canary_errors=3, stable_errors=18), "pass", []),       # 1.5% vs stable's 1%: within 2x
    (figures(canary_errors=3, stable_errors=3), "fail", ["error ratio <= 2 x stable"]),  # 1.5% vs 0.17%
    (figures(canary_errors=1), "pass", []),                          # 0.5%: at the floor, no relative verdict
    (figures(canary_p99=0.6, stable_p99=0.02), "fail", ["p99 latency <= 1.5 x stable"]),
    (figures(canary_p99=0.04, stable_p99=0.01), "pass", []),         # 40 ms: under the 50 ms floor
    (figures(canary_p99=1.2, stable_p99=1.0), "fail", ["p99 latency <= max"]),
    (figures(canary_errors=2, stable_n=0, stable_p99=None), "pass", []),  # 100%: nothing to compare with
])
def test_verdicts(given, verdict, failed):
    result = ca.judge(ANALYSIS, given, 30)
    assert (result.verdict, [c.name for c in result.checks if not c.ok]) == (verdict, failed), result.reason


def test_the_queries_are_valid_promql_and_compare_the_same_routes(tmp_path):
    queries = ANALYSIS.queries(30)
    rules = {"groups": [{"name": "canary", "rules": [{"record": f"canary:{name}", "expr": expr}
                                                    for name, expr in queries.items()]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    selectors = {expr.split("{", 1)[1].split("}", 1)[0].replace('"stable"', '"canary"')
                 for name, expr in queries.items() if "requests" in name}
    assert len(selectors) == 1 and "/ws" in selectors.pop()  # the WebSocket class never has a canary


# --- the rollout, against a recorded tier ----------------------------------------

class Tier:
    def __init__(self) -> None:
        self.actions: list[tuple] = []

    def set_weight(self, weight):
        self.actions.append(("weight", weight))
        return {}

    def deploy(self, release):
        self.actions.append(("deploy", release))

    def promote(self, release):
        self.actions.append(("promote", release))

    def restore_canary(self, releases):
        self.actions.append(("restore", releases))

    def weights(self):
        return {}


class Prom:
    """Answers each analysis with the next figures of a script; the last repeats."""

    def __init__(self, script: list[dict]) -> None:
        self.script, self.calls = script, 0

    def query(self, expr: str) -> list[dict]:
        figs = self.script[min(self.calls // 6, len(self.script) - 1)]  # six queries per analysis
        self.calls += 1
        window = int(re.search(r"\[(\d+)s\]", expr)[1])
        value = figs.get({q: name for name, q in ANALYSIS.queries(window).items()}[expr])
        return [] if value is None else [{"metric": {}, "value": [0, str(value)]}]


@pytest.fixture
def rollouts(tmp_path, monkeypatch):
    monkeypatch.setattr("automata_lb.targets.LAB_RECORDS", tmp_path / "records")
    return tmp_path


def drive(script, steps=(10, 50, 100), interval=15.0, phase="deploying", step=0, analysis=ANALYSIS):
    clock = [0.0]
    tier, rollout = Tier(), canary.Rollout("lab", "v2", list(steps), interval, analysis.as_dict(),
                                           {"canary-1": "canary"}, phase=phase, step=step)

    def sleep(seconds):
        clock[0] += seconds

    final = canary.Runner(rollout, tier, analysis, Prom(script), lambda _: None,
                          clock=lambda: clock[0], sleep=sleep).run()
    return final, tier.actions, canary.load("lab")


def test_a_healthy_canary_goes_through_every_step_and_is_promoted(rollouts):
    final, actions, saved = drive([figures()])
    assert final == "promoted"
    assert actions == [("weight", 0), ("deploy", "v2"), ("weight", 10), ("weight", 50), ("weight", 100),
                       ("promote", "v2"), ("weight", 0)]
    assert saved.phase == "promoted" and saved.weight == 0
    passed = [e for e in saved.events if e["what"] == "passed"]
    assert [e["weight"] for e in passed] == [10, 50, 100]


def test_a_failing_check_rolls_back_at_once_with_the_figures_that_failed(rollouts):
    # Healthy for three analyses (step 1 passes), then 30% errors.
    final, actions, saved = drive([figures()] * 3 + [figures(canary_errors=60)])
    assert final == "rolled-back"
    assert actions[-2:] == [("weight", 0), ("restore", {"canary-1": "canary"})]
    assert ("promote", "v2") not in actions
    assert saved.reason.startswith("analysis failed at 50%: error ratio <= max: canary 30.00%")
    failed = next(e for e in saved.events if e["what"] == "rolling-back")
    assert failed["analysis"]["verdict"] == "fail" and failed["analysis"]["canary_requests"] == 200


def test_without_traffic_the_rollout_waits_then_pauses_and_resumes(rollouts):
    analysis = ca.load(sets=["max_inconclusive=3"])
    final, actions, saved = drive([figures(canary_n=0, stable_n=0)], analysis=analysis)
    assert final == "paused" and saved.step == 0 and ("promote", "v2") not in actions
    assert "0 of 50 canary requests" in saved.reason
    final, actions, _ = drive([figures()], phase="paused", analysis=analysis)
    assert final == "promoted" and actions[0] == ("weight", 10)   # resumed at the step it paused on


def test_prometheus_away_is_no_verdict_never_a_promotion(rollouts):
    class Down:
        def query(self, expr):
            raise PrometheusError("http://127.0.0.1:9090: connection refused")

    rollout = canary.Rollout("lab", "v2", [10], 10.0, ANALYSIS.as_dict(), {}, phase="stepping")
    clock = [0.0]
    analysis = ca.load(sets=["max_inconclusive=2"])
    final = canary.Runner(rollout, Tier(), analysis, Down(), lambda _: None, clock=lambda: clock[0],
                          sleep=lambda s: clock.__setitem__(0, clock[0] + s)).run()
    assert final == "paused" and "Prometheus" in rollout.reason


def test_an_interrupted_rollout_is_explained_and_a_second_one_refused(rollouts):
    rollout = canary.Rollout("lab", "v2", [10, 50], 30.0, ANALYSIS.as_dict(), {}, phase="stepping", step=1,
                             weight=50, pid=999999)
    canary.save(rollout)
    said = canary.describe(canary.load("lab"), canary.holder("lab"))
    assert said.startswith("v2: interrupted while stepping at step 2 of 2 (50%) (process 999999 is gone)")
    with canary.lock("lab"):
        assert canary.holder("lab") > 0
        with pytest.raises(canary.Busy), canary.lock("lab"):
            pass
    assert canary.holder("lab") is None


def test_the_cli_refuses_a_second_rollout_and_resumes_nothing_finished(rollouts, monkeypatch, tmp_path):
    lab_json = tmp_path / "lab.json"
    lab_json.write_text('{"edges": [], "backends": []}')
    monkeypatch.setattr("automata_lb.targets.LAB_JSON", lab_json)
    monkeypatch.setattr("automata_lb.targets.LAB_INVENTORY", ROOT / "inventories" / "lab")
    monkeypatch.setattr("automata_lb.backend_changes.current", lambda target: backend_changes.BackendState(
        [{"name": "backend-1"}], [{"name": "canary-1"}], {}, 10))
    canary.save(canary.Rollout("lab", "v2", [10, 50], 30.0, ANALYSIS.as_dict(), {}, phase="stepping"))
    runner = CliRunner()
    refused = runner.invoke(cli.app, ["canary-deploy", "v3", "--steps", "10,50"])
    assert refused.exit_code == 1 and "interrupted while stepping" in refused.output
    done = canary.load("lab")
    done.phase = "promoted"
    canary.save(done)
    nothing = runner.invoke(cli.app, ["canary-deploy", "--resume"])
    assert nothing.exit_code == 1 and "nothing to resume" in nothing.output


# --- a stack: the steps as object diffs -------------------------------------------

def test_a_stack_rollout_dry_run_renders_the_mesh_weights_of_every_step(monkeypatch, tmp_path):
    copy = tmp_path / "stacks"
    shutil.copytree(offline.stack_dir(), copy)
    monkeypatch.setattr(offline, "stack_dir", lambda: copy)
    monkeypatch.setattr(stack_ops, "stack_file", lambda stack: copy / f"Pulumi.{stack}.yaml")
    result = CliRunner().invoke(cli.app, ["--stack", "staging", "canary-deploy", "ghcr.io/automata/backend:1.3.0",
                                          "--steps", "25,100", "--interval", "1m", "--dry-run"])
    assert result.exit_code == 0, result.output
    # The canary route's weight (route[1]) of every canary-class route, step by step.
    canary_weights = [line.rsplit("-> ", 1)[1] for line in result.output.splitlines()
                      if "VirtualService/automata-edge" in line and "route[1].weight" in line]
    assert canary_weights == ["25"] * 4 + ["100"] * 4, result.output
    assert "automata_http_requests_total" in result.output
    assert (copy / "Pulumi.staging.yaml").read_text() == (offline.stack_dir() / "Pulumi.staging.yaml").read_text()
