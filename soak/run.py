"""python -m soak: production-like traffic through every load balancer of
the lab for a while, with faults injected one at a time, and nothing lost
beyond what each fault's bound allows.

    .venv/bin/python -m soak --duration 1h                 # every fault, again and again
    .venv/bin/python -m soak --duration 3m --faults lb-reload,canary-step,backend-kill

The mixed Locust scenario (HTTP, WebSockets, AI streams, auth bursts) runs
through NGINX and HAProxy of both edge nodes and through the floating
address.  A seeded scheduler takes the faults in a shuffled order, each
held for its `hold`, recovered, then followed by plain load (`recovery`),
all from soak/gates.toml.  Reports: reports/soak/<run-id>/ (index.html,
timeline.png, soak.json, soak.txt, and Locust's own).

Exit status: 0 every gate held, 1 a gate broke, 2 bad arguments or the
soak could not run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

from automata_lb import playbook
from automata_lb.prom import duration_seconds
from lab.stack import INVENTORY
from load_tests import gates as load_gates
from load_tests.drill import DrillError
from load_tests.runner import LOCUSTFILE, UsageError, new_run_folder, stop_locust, wait_spawned
from load_tests.targets import ROOT, load_lab

from . import judge, report
from .faults import CATALOGUE, Fault, Injection, Soak
from .gates import GateError, Gates, load
from .resources import Sampler

REPORTS = ROOT / "reports" / "soak"
EDGE_PLAYBOOK = ROOT / "playbooks" / "edge.yml"
# What a fault's inject and recovery take at most on a busy lab, on top of
# its hold: a fault that cannot finish before the end is not started.
FAULT_MARGIN_S = 25
LOAD_GRACE_S = 600
BASELINE_S = 5
FAILURES = (DrillError, RuntimeError, subprocess.SubprocessError, httpx.HTTPError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Faults, gates and reports: docs/soak.md")
    p.add_argument("--duration", default="1h", help="how long the load runs: 3m, 1h (default 1h)")
    p.add_argument("--faults", default=",".join(CATALOGUE),
                   help=f"comma-separated, from: {', '.join(CATALOGUE)} (default: all)")
    p.add_argument("--seed", type=int, default=1, help="orders the faults and picks their instance (default 1)")
    p.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    p.add_argument("--spawn-rate", type=float, default=20, help="users started per second (default 20)")
    p.add_argument("--gates", default=str(Path(__file__).with_name("gates.toml")), help="gate file (TOML)")
    p.add_argument("--report-dir", default=str(REPORTS), help="where run folders go (default reports/soak)")
    p.add_argument("--run-id", default=None, help="this run's folder (default <UTC time>-<seed>)")
    p.add_argument("--no-converge", action="store_true",
                   help="skip the converges before and after (the one after must change nothing)")
    return p.parse_args(argv)


def endpoints(lab: dict) -> list[tuple[str, str]]:
    """(name, URL): both load balancers of every edge node, and of the floating address."""
    found = [(f"{e['name']}/{lb}", e["endpoints"][f"{lb}_https"]) for e in lab["edges"] for lb in ("nginx", "haproxy")]
    if lab.get("vip"):
        found += [(f"vip/{lb}", lab["vip"]["endpoints"][f"{lb}_https"]) for lb in ("nginx", "haproxy")]
    return found


def locust_argv(args: argparse.Namespace, targets: list[tuple[str, str]], out: Path, seconds: float) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "--host", ",".join(url for _, url in targets), "--target-names", ",".join(n for n, _ in targets),
            "--users", str(args.users), "--spawn-rate", f"{args.spawn_rate:g}", "--scenario", "drill",
            "--report-dir", str(out), "--csv", str(out / "locust"), "--html", str(out / "report.html"),
            "--run-time", f"{int(seconds + LOAD_GRACE_S)}s", *load_gates.SCENARIOS["mixed"]]


def schedule(names: list[str], seed: int) -> list[str]:
    """The order faults come in: every one once in a shuffled round, then
    the next round, reshuffled; the same seed gives the same order."""
    rng = random.Random(seed)
    rounds = []
    for _ in range(100):
        batch = list(names)
        rng.shuffle(batch)
        rounds += batch
    return rounds


def recover(soak: Soak, fault: Fault, event: Injection) -> str | None:
    """Put the lab back from `fault`; why it could not, or None."""
    event.recovering = time.time()
    try:
        fault.recover(soak, event)
    except FAILURES as exc:
        return f"{event.fault} did not recover: {exc}"
    event.recovered = time.time()
    return None


def inject_faults(soak: Soak, gates: Gates, order: list[str], until: float, done: list[Injection],
                  log) -> str | None:
    """Faults one at a time until `until`, each appended to `done` as it
    starts; why it stopped early, or None.  Whatever stops it (an error,
    Ctrl-C), the fault in effect is recovered before it returns."""
    for name in order:
        gate = gates.faults[name]
        if time.time() + gate.hold_s + gates.recovery_s + FAULT_MARGIN_S > until:
            break
        fault = CATALOGUE[name](gate)
        event = Injection(name, time.time())
        done.append(event)
        log(f"soak: {name}")
        try:
            fault.inject(soak, event)
            event.injected = time.time()
            time.sleep(gate.hold_s)   # time is the input: the fault stays this long
        except FAILURES as exc:
            event.detail = f"could not inject: {exc}"
        finally:
            stuck = recover(soak, fault, event)
        if stuck or event.detail.startswith("could not inject"):
            return stuck or f"{name}: {event.detail}"
        time.sleep(gates.recovery_s)  # plain load: the fault's aftermath is its own
    return None


def converge(log, what: str) -> dict:
    """A converge of the lab: the opening one puts the nodes where the
    inventory says (whatever earlier work left), so the closing one, which
    must change nothing, sees only what the soak itself left behind."""
    log(f"soak: the {what} converge")
    run = playbook.run(EDGE_PLAYBOOK, INVENTORY)
    return {"rc": run.rc, "seconds": round(run.seconds, 1), "changed": run.changed,
            "changed_tasks": run.changed_tasks, "ok": run.rc == 0 and not any(run.changed.values())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        duration = duration_seconds(args.duration)
    except ValueError as exc:
        print(f"python -m soak: error: --duration: {exc}", file=sys.stderr)
        return 2
    if args.users < 1 or not args.spawn_rate > 0:
        bad = f"--users {args.users}: must be at least 1" if args.users < 1 else \
            f"--spawn-rate {args.spawn_rate:g}: must be above 0"
        print(f"python -m soak: error: {bad}", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown or not names:
        print(f"python -m soak: error: --faults {unknown[0] if unknown else '(none)'}: "
              f"not a fault (known: {', '.join(CATALOGUE)})", file=sys.stderr)
        return 2
    try:
        gates = load(Path(args.gates), set(CATALOGUE))
    except GateError as exc:
        print(f"python -m soak: error: {exc}", file=sys.stderr)
        return 2
    if (shortest := min(gates.faults[n].hold_s for n in names) + gates.recovery_s + FAULT_MARGIN_S) > duration:
        print(f"python -m soak: error: --duration {args.duration}: too short for any of the faults "
              f"(the shortest needs {shortest:.0f} s)", file=sys.stderr)
        return 2
    lab = load_lab()
    if lab is None:
        print("python -m soak: error: the lab is not up (.lab/lab.json): `make lab`", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    victim = rng.choice(sorted(b["name"] for b in lab["backends"] if b["version"] == "stable"))
    targets = endpoints(lab)
    # Locust deals its users to the endpoints in turn (load_tests/locustfile.py).
    users_by_target = {name: len(range(i, args.users, len(targets))) for i, (name, _) in enumerate(targets)}
    soak = Soak(lab, victim, log, users_by_target)
    try:
        if not soak.whole():
            raise DrillError(f"{victim} is not healthy behind both balancers on every node")
    except FAILURES as exc:
        print(f"python -m soak: error: the lab is not ready: {exc}", file=sys.stderr)
        return 2
    opening = None if args.no_converge else converge(log, "opening")
    if opening is not None and opening["rc"] != 0:
        print(f"python -m soak: error: the opening converge failed (rc={opening['rc']})", file=sys.stderr)
        return 2
    run_id = args.run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-seed{args.seed}"
    try:
        out = new_run_folder(args.report_dir, run_id)
    except UsageError as exc:
        print(f"python -m soak: error: {exc}", file=sys.stderr)
        return 2
    argv = locust_argv(args, targets, out, duration)
    (out / "command.json").write_text(json.dumps({"argv": sys.argv, "locust": argv}, indent=1))
    log(f"soak {run_id}: {duration / 60:.1f} min through {', '.join(n for n, _ in targets)}; "
        f"faults {', '.join(names)} (seed {args.seed}, victim {victim}); reports in {out}")

    containers = {e["container"]: "edge" for e in lab["edges"]}
    containers |= {b["container"]: "backend" for b in lab["backends"]}
    containers[lab["prometheus"]["container"]] = "prometheus"
    sampler = Sampler(containers).start()
    child = subprocess.Popen(argv)
    problem = None
    injections: list[Injection] = []
    try:
        wait_spawned(child, out, timeout=args.users / args.spawn_rate + 60)
        started = time.time()
        # Plain load before the first fault: its failures are nobody's but the tier's.
        injections.append(Injection("baseline", started, injected=started, recovering=started, recovered=started))
        time.sleep(BASELINE_S)
        problem = inject_faults(soak, gates, schedule(names, args.seed), started + duration, injections, log)
        if problem is None:
            time.sleep(max(0.0, started + duration - time.time()))   # the rest of the run: plain load
    except FAILURES as exc:
        problem = f"the soak stopped: {exc}"
    except KeyboardInterrupt:
        problem = "interrupted"
    finally:
        rc = stop_locust(child)
        sampler.stop()
    if problem:
        print(f"python -m soak: {problem}", file=sys.stderr)
    if not (out / "summary.json").exists():
        print(f"Locust wrote no summary (exit {rc}): the soak cannot be judged", file=sys.stderr)
        return 2
    summary = json.loads((out / "summary.json").read_text())
    judge.windows(injections, summary, load_end=summary["stopped"])
    scrape = float(lab["prometheus"].get("scrape_interval_seconds", 15))
    fired = judge.prometheus_range(soak.prometheus, summary["started"], summary["stopped"], scrape)
    judge.alerts(injections, fired, soak.prometheus.alert_holds(), gates, scrape)
    trends = judge.leaks(sampler.trends(), gates, summary["duration_s"])
    closing = None if args.no_converge else converge(log, "closing")

    broken = [e.fault for e in injections if not e.ok] + [g for g, t in trends.items() if not t["ok"]]
    if closing is not None and not closing["ok"]:
        broken.append("closing converge")
    if problem:
        broken.append(problem)
    doc = {"run_id": run_id, "seed": args.seed, "victim": victim, "duration_s": summary["duration_s"],
           "started": summary["started"], "stopped": summary["stopped"],
           "verdict": "PASS" if not broken else f"FAIL ({'; '.join(broken)})",
           "faults": [{**e.__dict__, "ok": e.ok} for e in injections],
           "load": {k: summary[k] for k in ("targets", "requests", "failures", "rate_limited", "ws_going_away",
                                            "target_timeline", "target_p99_ms", "gates")},
           "alerts_fired": fired, "unexpected_alerts": judge.unexpected(fired, injections, gates),
           "resources": {"trends": trends, "samples": {g: s.samples for g, s in sampler.series.items()}},
           "opening_converge": opening, "closing_converge": closing}
    log("\n" + report.write(doc, out))
    log(f"reports: {out} (index.html, timeline.png, soak.json)")
    return 0 if not broken else 1
