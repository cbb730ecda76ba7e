"""The canary: canary-deploy (held at a weight, or progressive with --steps),
canary-status, canary-abort."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from monitoring import canary_analysis

from .. import canary, history
from ..output import Column, emit_json, show, table
from ..prom import Prometheus
from ..targets import TargetError
from .base import FAILED, OK, UNREACHABLE, ago, app, bounded, duration_option, err, out
from .changes import DryRun, Yes, confirm, say
from .kinds import resolve


@app.command("canary-deploy")
def canary_deploy(
    release: Annotated[str | None, typer.Argument(help="Lab: a release name (or an image with a pinned tag); "
                                                        "stack: a pinned image.  Not with --resume.")] = None,
    weight: Annotated[int, typer.Option(help="Without --steps: hold the canary at this percent of "
                                             "canary-class traffic, no analysis.",
                                        callback=bounded(0, 100, unit="(percent)"))] = 10,
    steps: Annotated[str | None, typer.Option(help="Progressive: the weights to go through, e.g. 10,25,50,100; "
                                                   "each step is judged on Prometheus before the next.")] = None,
    interval: Annotated[str, typer.Option(help="Progressive: how long each step lasts (30s, 2m).")] = "30s",
    analysis_file: Annotated[Path | None, typer.Option(
        "--analysis", help="Progressive: thresholds overriding monitoring/canary-analysis.yml.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Progressive: one threshold, e.g. --set error_ratio.max=0.05 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted or paused rollout.")] = False,
    prometheus: Annotated[str | None, typer.Option(help="Stack: the Prometheus the analysis asks "
                                                        "(the lab knows its own).")] = None,
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """Run RELEASE on the canary track.  With --steps: shift its weight step by
    step on both load balancers (or the mesh), judge every step on the
    canary's error ratio and p99 against stable, promote when every step
    passed, roll back by itself when one fails.  Without: hold --weight."""
    if steps is None and not resume:
        if release is None:
            raise typer.BadParameter("give the release to deploy", param_hint="RELEASE")
        resolve().canary_hold(release, weight, dry_run, yes)
        return
    deploy(release, steps, interval, analysis_file, sets, resume, prometheus, dry_run, yes)


def deploy(release: str | None, steps: str | None, interval: str, analysis_file: Path | None,
           sets: list[str] | None, resume: bool, prometheus: str | None, dry_run: bool, yes: bool) -> None:
    """canary-deploy with --steps, or --resume: the progressive rollout."""
    if resume and release is not None:
        raise typer.BadParameter("--resume goes on with the recorded release; give no RELEASE", param_hint="RELEASE")
    if not resume and release is None:
        raise typer.BadParameter("give the release to deploy", param_hint="RELEASE")
    weights = _steps(steps) if steps is not None else []
    seconds = duration_option(interval, "--interval")
    try:
        analysis = canary_analysis.load(analysis_file, sets or ())
    except canary_analysis.AnalysisError as exc:
        raise typer.BadParameter(str(exc), param_hint="--analysis/--set") from None
    if seconds < analysis.check_every_s:
        raise typer.BadParameter(f"{interval} is shorter than the analysis period check_every "
                                 f"({analysis.check_every_s:g}s)", param_hint="--interval")
    target = resolve()
    start = target.rollout_start(release, prometheus)
    name = target.name
    recorded, running = canary.load(name), canary.holder(name)
    if resume:
        if recorded is None or recorded.phase in canary.FINISHED:
            err.print(f"automata-lb: nothing to resume on {name}: {canary.describe(recorded, running)}")
            raise typer.Exit(FAILED)
        rollout = recorded
        analysis = canary_analysis.from_dict(rollout.analysis)
    else:
        if recorded is not None and recorded.phase not in canary.FINISHED:
            err.print(f"automata-lb: refused: {canary.describe(recorded, running)}")
            raise typer.Exit(FAILED)
        rollout = canary.Rollout(name, start.release, weights, seconds, analysis.as_dict(),
                                 start.canary_releases_before)
    _print_rollout_plan(rollout, analysis)
    if dry_run:
        target.rollout_plan(rollout)
        raise typer.Exit(OK)
    if not start.prometheus_url:
        err.print(f"automata-lb: the analysis reads Prometheus: {start.prometheus_missing}")
        raise typer.Exit(UNREACHABLE)
    confirm(target.production, f"canary-deploy {rollout.release}", yes)
    started = time.monotonic()
    try:
        with canary.lock(name), canary.interruptible():
            final = canary.Runner(rollout, start.tier, analysis, Prometheus(start.prometheus_url), say).run()
    except canary.Busy as exc:
        err.print(f"automata-lb: refused: {exc}")
        raise typer.Exit(FAILED) from None
    except KeyboardInterrupt:
        err.print(f"automata-lb: interrupted: {canary.describe(canary.load(name), None)}")
        raise typer.Exit(FAILED) from None
    except TargetError as exc:
        err.print(f"automata-lb: canary-deploy stopped while {rollout.phase}: {exc}\n"
                  "  `canary-status` shows where it stands; `--resume` or `canary-abort` finishes it")
        raise typer.Exit(FAILED) from None
    before, after = target.rollout_records(start, rollout, resume)
    history.record(name, "canary-deploy", before, after,
                   outcome=final, reason=rollout.reason, seconds=round(time.monotonic() - started, 1),
                   release=rollout.release, steps=rollout.steps, analysis=rollout.last_analysis)
    out.print(f"{final}: {rollout.reason}")
    raise typer.Exit(OK if final == "promoted" else FAILED)


def _steps(value: str) -> list[int]:
    try:
        weights = [int(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give percentages separated by commas, e.g. 10,25,50,100",
                                 param_hint="--steps") from None
    if not weights or any(not 1 <= w <= 100 for w in weights) or weights != sorted(set(weights)):
        raise typer.BadParameter(f"{value!r}: percentages between 1 and 100, rising, each once",
                                 param_hint="--steps")
    return weights


def _print_rollout_plan(rollout: canary.Rollout, analysis: canary_analysis.Analysis) -> None:
    out.print(f"[bold]canary-deploy[/] {rollout.release} on {rollout.target}: steps "
              + " -> ".join(f"{w}%" for w in rollout.steps) + f", {rollout.interval_s:g}s each, then promote",
              soft_wrap=True, highlight=False)
    if rollout.phase != "deploying" or rollout.step:
        out.print(f"  resuming: {canary.describe(rollout, None)}", soft_wrap=True, markup=False, highlight=False)
    e, p = analysis.error_ratio, analysis.latency_p99
    out.print(f"  analysis every {analysis.check_every_s:g}s once {analysis.min_requests} canary requests are in: "
              f"error ratio <= {e.max:g} and <= {e.max_vs_stable:g}x stable (above {e.floor:g}); "
              f"p99 <= {p.max:g}s and <= {p.max_vs_stable:g}x stable (above {p.floor:g}s); "
              f"paused after {analysis.max_inconclusive} analyses without enough traffic",
              soft_wrap=True, markup=False, highlight=False)
    out.print("  queries (window: the time since the step began, here the whole interval):", highlight=False)
    for label, expr in analysis.queries(rollout.interval_s).items():
        out.print(f"    {label}: {expr}", soft_wrap=True, markup=False, highlight=False)


@app.command("canary-status")
def canary_status(as_json: Annotated[bool, typer.Option("--json", help="Print the rollout as JSON.")] = False) -> None:
    """Where the progressive canary stands: phase, step, the weights each load
    balancer sends now, the last analysis and its figures."""
    target = resolve()
    name = target.name
    rollout, running = canary.load(name), canary.holder(name)
    try:
        weights = target.canary_tier().weights()
    except TargetError as exc:
        weights = {"error": str(exc)}
    doc = {"target": name, "summary": canary.describe(rollout, running), "running_pid": running,
           "weights": weights, "rollout": asdict(rollout) if rollout else None}
    if as_json:
        emit_json(doc)
        raise typer.Exit(OK)
    out.print(doc["summary"], soft_wrap=True, markup=False, highlight=False)
    if rollout is None:
        raise typer.Exit(OK)
    marks = [f"[bold]{w}%[/]" if i == rollout.step and rollout.phase not in canary.FINISHED else f"{w}%"
             for i, w in enumerate(rollout.steps)]
    out.print(f"steps: {' -> '.join(marks)}, {rollout.interval_s:g}s each; recorded weight {rollout.weight}%")
    tiers = [t for t in ("nginx", "haproxy", "istio") if any(isinstance(w, dict) and t in w for w in weights.values())]
    rows = [(node, *(f"{w[t]}%" if w.get(t) is not None else "-" for t in tiers))
            for node, w in weights.items() if isinstance(w, dict)]
    if "error" in weights:
        err.print(f"automata-lb: weights unknown: {weights['error']}")
    show(out, table("Canary weight now", [Column("node"), *(Column(t, "right") for t in tiers)], rows, out))
    last = rollout.last_analysis
    if last:
        out.print(f"last analysis ({ago(last['time'])}, window {last['window_s']:.0f}s): "
                  f"[bold]{last['verdict']}[/]: {last['reason']}", soft_wrap=True, highlight=False)


@app.command("canary-abort")
def canary_abort(dry_run: DryRun = False, yes: Yes = False) -> None:
    """Roll the canary back now: weight 0 on every load balancer, the canary
    instances back to what they ran (stops a rollout running elsewhere first)."""
    target = resolve()
    name = target.name
    rollout = canary.load(name)
    if rollout is None or rollout.phase in canary.FINISHED:
        err.print(f"automata-lb: nothing to abort on {name}: {canary.describe(rollout, canary.holder(name))}")
        raise typer.Exit(FAILED)
    out.print(f"[bold]canary-abort[/] {rollout.release} on {name}: weight {rollout.weight}% -> 0% at once, "
              f"then the canary instances back to {rollout.canary_releases_before}", soft_wrap=True, highlight=False)
    if dry_run:
        raise typer.Exit(OK)
    target.abort_check()
    confirm(target.production, "canary-abort", yes)
    try:
        canary.abort(name, say)
        with canary.lock(name), canary.interruptible():
            rollout = canary.load(name)
            if rollout.phase not in canary.FINISHED:
                rollout.reason = f"aborted by hand at {rollout.weight}%"
                rollout.phase = "rolling-back"
                rollout.event("abort")
                canary.save(rollout)
                analysis = canary_analysis.from_dict(rollout.analysis)
                canary.Runner(rollout, target.canary_tier(), analysis, None, say).run()
    except (canary.Busy, TargetError) as exc:
        err.print(f"automata-lb: canary-abort stopped: {exc}")
        raise typer.Exit(FAILED) from None
    history.record(name, "canary-abort", {"release": rollout.release}, {"canary": rollout.canary_releases_before},
                   outcome=rollout.phase, reason=rollout.reason)
    out.print(f"{rollout.phase}: {rollout.reason}")


