"""automata-lb against a stack: every change is checked by running the
Pulumi program offline, written into the stack's config with its comments
kept, and shown as the exact object diff `pulumi up` would apply."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from automata_lb import cli, history
from automata_lb import stack as stack_ops
from infra import offline

runner = CliRunner()


@pytest.fixture
def stacks(tmp_path, monkeypatch):
    """A copy of stacks/ that the commands edit, and a private history."""
    copy = tmp_path / "stacks"
    shutil.copytree(offline.stack_dir(), copy)
    monkeypatch.setattr(offline, "stack_dir", lambda: copy)
    monkeypatch.setattr(stack_ops, "stack_file", lambda stack: copy / f"Pulumi.{stack}.yaml")
    monkeypatch.setattr(history, "DIR", tmp_path / "history")
    return copy


def run(*args: str):
    return runner.invoke(cli.app, list(args), catch_exceptions=False)


def diff_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip()[:2] in ("~ ", "+ ", "- ")]


def test_scale_up_raises_the_hpa_floor_and_keeps_the_files_comments(stacks):
    before = (stacks / "Pulumi.prod.yaml").read_text()
    result = run("--stack", "prod", "scale-up", "2", "--yes")
    assert result.exit_code == 0, result.output
    assert diff_lines(result.output) == ["~ HorizontalPodAutoscaler/automata-api spec.minReplicas: 3 -> 5"]
    after = (stacks / "Pulumi.prod.yaml").read_text()
    assert "automata:apiMinReplicas: 5" in after
    assert after.splitlines()[:2] == before.splitlines()[:2]  # the file's comments
    assert stack_ops.current("prod")["apiMinReplicas"] == 5


def test_dry_run_shows_the_diff_and_writes_nothing(stacks):
    before = (stacks / "Pulumi.prod.yaml").read_text()
    result = run("--stack", "prod", "rolling-update", "ghcr.io/automata/backend:1.2.0", "--dry-run")
    assert result.exit_code == 0
    assert diff_lines(result.output) == [
        f"~ Deployment/automata-{c} spec.template.spec.containers[0].image: "
        "'ghcr.io/automata/backend:1.0.0' -> 'ghcr.io/automata/backend:1.2.0'"
        for c in ("ai", "api", "websocket")]
    assert (stacks / "Pulumi.prod.yaml").read_text() == before


def test_canary_deploy_changes_the_canary_image_and_the_mesh_weights(stacks):
    result = run("--stack", "staging", "canary-deploy", "ghcr.io/automata/backend:1.2.0", "--weight", "25")
    assert result.exit_code == 0, result.output
    lines = diff_lines(result.output)
    images = [x for x in lines if x.startswith("~ Deployment/")]
    weights = [x for x in lines if x.startswith("~ VirtualService/")]
    assert len(images) == 3 and all(x.endswith("-> 'ghcr.io/automata/backend:1.2.0'") for x in images)
    assert weights and all(x.endswith(("80 -> 75", "20 -> 25")) for x in weights)
    assert len(lines) == len(images) + len(weights)
    assert stack_ops.current("staging")["trafficPolicy"] == {"canary": {"share": 25}}


def test_auto_scale_and_disable_auto_scale(stacks):
    result = run("--stack", "staging", "auto-scale", "--min-replicas", "3", "--max-replicas", "10",
                 "--cpu-threshold", "60")
    assert result.exit_code == 0, result.output
    assert sorted(diff_lines(result.output)) == sorted([
        "~ HorizontalPodAutoscaler/automata-api spec.maxReplicas: 5 -> 10",
        "~ HorizontalPodAutoscaler/automata-api spec.minReplicas: 2 -> 3",
        *[f"~ HorizontalPodAutoscaler/automata-{c} spec.metrics[0].resource.target.averageUtilization: 70 -> 60"
          for c in ("ai", "api", "websocket")]])
    result = run("--stack", "staging", "disable-auto-scale")
    assert result.exit_code == 0, result.output
    lines = diff_lines(result.output)
    assert {x for x in lines if x.startswith("- ")} == {
        f"- HorizontalPodAutoscaler/automata-{c}" for c in ("ai", "api", "websocket")}
    assert stack_ops.current("staging")["autoscaling"] is False


def test_rollback_restores_the_values_before_the_last_change(stacks):
    original = stack_ops.current("staging")
    assert run("--stack", "staging", "canary-deploy", "ghcr.io/automata/backend:1.2.0", "--weight", "50").exit_code == 0
    result = run("--stack", "staging", "rollback")
    assert result.exit_code == 0, result.output
    assert stack_ops.current("staging") == original


@pytest.mark.parametrize(("args", "message"), [
    (["canary-deploy", "ghcr.io/automata/backend:1.2.0", "--weight", "101"], "between 0 and 100"),
    (["rolling-update", "ghcr.io/automata/backend"], "has no tag"),
    (["rolling-update", "ghcr.io/automata/backend:latest"], "uses :latest"),
    (["scale-down", "5"], "apiMinReplicas would become -2"),
    (["scale-up", "0"], "must be at least 1"),
    (["auto-scale", "--min-replicas", "5", "--max-replicas", "2"], "--min-replicas (5) <= --max-replicas (2)"),
    (["auto-scale", "--cpu-threshold", "120"], "between 1 and 100"),
    (["scale-up", "1", "--class", "gpu"], "'gpu' is not one of api, websocket, ai"),
])
def test_bad_arguments_are_refused_naming_them_and_change_nothing(stacks, args, message):
    before = {p.name: p.read_text() for p in stacks.iterdir()}
    result = run("--stack", "prod", *args, "--yes")
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert {p.name: p.read_text() for p in stacks.iterdir()} == before


def test_a_value_the_program_refuses_is_refused_before_writing(stacks):
    before = (stacks / "Pulumi.prod.yaml").read_text()
    # Above the HPA ceiling: the program's own check names the key.
    result = run("--stack", "prod", "scale-up", "20", "--yes")
    assert result.exit_code == 2
    assert "automata:apiMinReplicas" in result.output
    assert (stacks / "Pulumi.prod.yaml").read_text() == before


def test_production_is_not_changed_without_yes_when_nobody_can_answer(stacks):
    before = (stacks / "Pulumi.prod.yaml").read_text()
    result = run("--stack", "prod", "scale-up", "1")
    assert result.exit_code == 1
    assert "without --yes" in result.output
    assert (stacks / "Pulumi.prod.yaml").read_text() == before
