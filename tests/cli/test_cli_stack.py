"""automata-lb against a stack: every change is checked by running the
Pulumi program offline, written into the stack's config with its comments
kept, and shown as the exact object diff `pulumi up` would apply."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from automata_lb import cli
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
    monkeypatch.setattr("automata_lb.targets.CHECKOUT_RECORDS", tmp_path / "records")
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


# --- safe by default: only what was given changes; capacity drops on a
# protected stack (prod) need --allow-capacity-drop -------------------------------

def files(stacks) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(stacks.iterdir())}


def refusal(result) -> str:
    return " ".join(result.output.split())


def test_prod_is_protected_and_the_others_are_not(stacks):
    assert {s: stack_ops.protected(s) for s in offline.stacks()} == {
        "dev": False, "local": False, "staging": False, "prod": True}


def test_auto_scale_changes_only_the_options_given(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "auto-scale", "--cpu-threshold", "60", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "auto-scale on stack prod: cpuTarget: 70 -> 60\n" in result.output
    assert sorted(diff_lines(result.output)) == [
        f"~ HorizontalPodAutoscaler/automata-{c} spec.metrics[0].resource.target.averageUtilization: 70 -> 60"
        for c in ("ai", "api", "websocket")]
    assert files(stacks) == before
    assert run("--stack", "prod", "auto-scale", "--cpu-threshold", "60", "--yes").exit_code == 0
    now = stack_ops.current("prod")
    assert (now["cpuTarget"], now["apiMinReplicas"], now["apiMaxReplicas"]) == (60, 3, 15)
    assert "memoryTarget" not in now and "autoscaling" not in now


def test_auto_scale_checks_a_bound_against_the_stacks_other_bound(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "auto-scale", "--min-replicas", "20", "--yes")
    assert result.exit_code == 2
    assert "need --min-replicas (20) <= --max-replicas (15, apiMaxReplicas today)" in refusal(result)
    assert files(stacks) == before


def test_auto_scale_lowering_a_protected_hpa_bound_needs_the_flag(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "auto-scale", "--max-replicas", "6", "--yes")
    assert result.exit_code == 2
    assert diff_lines(result.output) == ["~ HorizontalPodAutoscaler/automata-api spec.maxReplicas: 15 -> 6"]
    assert ("refused: auto-scale lowers the capacity of protected stack prod: Deployment/automata-api: "
            "at most 15 -> 6 pods. Give --allow-capacity-drop to go ahead.") in refusal(result)
    assert files(stacks) == before
    allowed = run("--stack", "prod", "auto-scale", "--max-replicas", "6", "--allow-capacity-drop", "--yes")
    assert allowed.exit_code == 0, allowed.output
    assert stack_ops.current("prod")["apiMaxReplicas"] == 6


def test_lab_autoscaler_options_are_refused_on_a_stack(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "auto-scale", "--cooldown", "30", "--dry-run")
    assert result.exit_code == 2 and "Invalid value for --cooldown: drives the lab autoscaler" in refusal(result)
    assert files(stacks) == before


def test_disable_auto_scale_on_prod_is_refused_showing_the_diff_first(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "disable-auto-scale", "--dry-run")
    assert result.exit_code == 2
    # The plan keeps today's floors: replicas is the highest HPA minimum (3), not a CLI default.
    assert sorted(diff_lines(result.output)) == sorted(
        [f"~ Deployment/automata-{c} spec.replicas: None -> 3" for c in ("ai", "api", "websocket")]
        + [f"- HorizontalPodAutoscaler/automata-{c}" for c in ("ai", "api", "websocket")])
    assert result.output.index("- HorizontalPodAutoscaler/automata-api") < result.output.index("refused")
    assert ("refused: disable-auto-scale lowers the capacity of protected stack prod: "
            "Deployment/automata-ai: its HorizontalPodAutoscaler removed, 2-8 pods -> 3 pinned; "
            "Deployment/automata-api: its HorizontalPodAutoscaler removed, 3-15 pods -> 3 pinned; "
            "Deployment/automata-websocket: its HorizontalPodAutoscaler removed, 3-12 pods -> 3 pinned. "
            "Give --allow-capacity-drop to go ahead.") in refusal(result)
    assert files(stacks) == before


def test_disable_auto_scale_with_the_flag_pins_todays_floor(stacks):
    result = run("--stack", "prod", "disable-auto-scale", "--allow-capacity-drop", "--yes")
    assert result.exit_code == 0, result.output
    assert "lowers capacity: Deployment/automata-api: its HorizontalPodAutoscaler removed" in result.output
    now = stack_ops.current("prod")
    assert (now["autoscaling"], now["replicas"]) == (False, 3)


def test_disable_auto_scale_replicas_below_a_floor_is_named(stacks):
    result = run("--stack", "prod", "disable-auto-scale", "--replicas", "2", "--allow-capacity-drop", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "lowers capacity: Deployment/automata-api: its HorizontalPodAutoscaler removed, 3-15 pods -> 2 pinned" \
        in result.output


def test_scale_up_to_below_todays_value_is_refused_naming_it(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "scale-up", "1", "--to", "--dry-run")
    assert result.exit_code == 2
    assert ("apiMinReplicas is 3 today; scale-up --to 1 would go the other way (that is `scale-down 1 --to`)"
            in refusal(result))
    assert files(stacks) == before
    # and the other way round, on an unprotected stack too (staging's floor is 2)
    result = run("--stack", "staging", "scale-down", "4", "--to", "--dry-run")
    assert result.exit_code == 2 and "apiMinReplicas is 2 today; scale-down --to 4" in refusal(result)


def test_scale_down_on_prod_needs_the_flag_and_yes_does_not_replace_it(stacks):
    before = files(stacks)
    result = run("--stack", "prod", "scale-down", "1", "--yes")
    assert result.exit_code == 2
    assert diff_lines(result.output) == ["~ HorizontalPodAutoscaler/automata-api spec.minReplicas: 3 -> 2"]
    assert "protected stack prod: Deployment/automata-api: at least 3 -> 2 pods. Give --allow-capacity-drop" \
        in refusal(result)
    assert files(stacks) == before
    result = run("--stack", "prod", "scale-down", "1", "--allow-capacity-drop", "--yes")
    assert result.exit_code == 0, result.output
    assert stack_ops.current("prod")["apiMinReplicas"] == 2


def test_an_unprotected_stack_drops_capacity_without_the_flag_but_says_so(stacks):
    result = run("--stack", "staging", "scale-down", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert "lowers capacity: Deployment/automata-api: at least 2 -> 1 pods" in result.output
    assert stack_ops.current("staging")["apiMinReplicas"] == 1


def test_rolling_back_a_scale_up_on_prod_is_a_capacity_drop(stacks):
    assert run("--stack", "prod", "scale-up", "2", "--yes").exit_code == 0
    scaled = files(stacks)
    refused = run("--stack", "prod", "rollback", "--yes")
    assert refused.exit_code == 2 and "at least 5 -> 3 pods" in refusal(refused)
    assert files(stacks) == scaled
    assert run("--stack", "prod", "rollback", "--allow-capacity-drop", "--yes").exit_code == 0
    assert stack_ops.current("prod")["apiMinReplicas"] == 3


def test_confirmation_follows_the_protected_key(stacks):
    stack_ops.write("staging", {"protected": True})
    before = files(stacks)
    result = run("--stack", "staging", "scale-up", "1")
    assert result.exit_code == 1 and "without --yes" in result.output
    assert files(stacks) == before


@pytest.mark.parametrize(("values", "drops"), [
    # The ingress gateway's HPA floor lives in Istio's Helm values.
    ({"meshGatewayMinReplicas": 2}, ["Release/istio-gateway values.autoscaling.minReplicas: 3 -> 2"]),
    ({"disruptionBudget": 2}, [f"PodDisruptionBudget/automata-{c}: maxUnavailable 1 -> 2"
                               for c in ("ai", "api", "websocket")]),
    # The canary track goes with its release (rollback, canary-abort): not capacity.
    ({"canaryImage": ""}, []),
    ({"apiMaxReplicas": 20}, []),
])
def test_capacity_drops_are_read_from_the_planned_objects(stacks, values, drops):
    assert stack_ops.plan("prod", values).drops == drops


def test_a_removed_pdb_or_workload_is_a_capacity_drop():
    deployment = {"spec": {"replicas": 3, "selector": {"matchLabels": {"version": "stable"}}}}
    pdb = {"spec": {"maxUnavailable": "10%"}}
    before = {"Deployment/web": deployment, "PodDisruptionBudget/web": pdb}
    assert stack_ops.capacity_drops(before, {"Deployment/web": deployment}) == [
        "PodDisruptionBudget/web: removed: node drains may then evict every pod at once"]
    assert stack_ops.capacity_drops(before, {"PodDisruptionBudget/web": {"spec": {"maxUnavailable": "25%"}}}) == [
        "Deployment/web: removed (3-3 pods)", "PodDisruptionBudget/web: maxUnavailable 10% -> 25%"]
