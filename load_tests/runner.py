"""python -m load_tests: one command for a gated, reported load test.

    .venv/bin/python -m load_tests --scenario mixed --target nginx --users 100 --spawn-rate 10 --run-time 60s
    .venv/bin/python -m load_tests --scenario api --target haproxy --web     # Locust's UI on 127.0.0.1:8089
    .venv/bin/python -m load_tests --drill --target nginx,haproxy --users 40  # the fault drill

Locust runs as a child process (`locust -f load_tests/locustfile.py`, which
also works on its own): its gevent monkey-patching stays out of this
process, where the fault drill uses plain threads, SSH and podman, and the
generator's CPU is its own.  Reports go to reports/load/<run-id>/.

Exit status: 0 every gate held (and the drill's bounds), 1 a gate or bound
broke, 2 bad arguments or the run could not happen.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from load_tests import gates as gates_mod
from load_tests.targets import ROOT, TargetError, load_lab, resolve, stable_instances

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPORTS = ROOT / "reports" / "load"
_RUN_TIME = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# Start-up and shutdown on top of --run-time before a run counts as hung.
OVERRUN_S = 120
# The load of a drill runs until the drill stops it; this only bounds it
# if the drill hangs.
DRILL_MAX_RUN_TIME = "600s"


class UsageError(ValueError):
    pass


def seconds(run_time: str) -> int:
    """Locust's run-time syntax (`90`, `90s`, `1m30s`, `1h`) in seconds."""
    if run_time.isdigit():
        return int(run_time)
    match = _RUN_TIME.match(run_time)
    if not run_time or not match:
        raise UsageError(f"--run-time {run_time!r}: use seconds or Locust's form such as 30s, 1m30s, 1h")
    h, m, s = (int(x or 0) for x in match.groups())
    return h * 3600 + m * 60 + s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load_tests", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Scenarios, gates and reports: docs/load-tests.md")
    p.add_argument("--scenario", default="mixed", choices=sorted(gates_mod.SCENARIOS), help="traffic to send (default mixed)")
    p.add_argument("--target", default="nginx",
                   help="nginx, haproxy (the lab's, over TLS), a URL, or several comma-separated "
                        "(users are dealt to them in turn); default nginx")
    p.add_argument("--edge", default="edge-1", help="lab edge node for nginx/haproxy (default edge-1)")
    p.add_argument("--users", type=int, default=100, help="peak simulated users (default 100)")
    p.add_argument("--spawn-rate", type=float, default=10, help="users started per second (default 10)")
    p.add_argument("--run-time", default=None, help="how long the load runs, e.g. 60s, 5m (default 60s)")
    p.add_argument("--gates", default=str(gates_mod.DEFAULT_GATES), help="SLO gate file (default load_tests/gates.toml)")
    p.add_argument("--report-dir", default=str(REPORTS), help="where run folders go (default reports/load)")
    p.add_argument("--run-id", default=None, help="name of this run's folder (default <UTC time>-<scenario>-<target>)")
    p.add_argument("--ca-cert", default="", help="CA to trust besides the system's (default: the lab's)")
    p.add_argument("--no-forwarded-for", action="store_true",
                   help="do not send a per-user X-Forwarded-For (a target that does not trust the generator)")
    p.add_argument("--web", action="store_true", help="Locust's web UI instead of headless (start the test there)")
    p.add_argument("--web-port", type=int, default=8089, help="port of the web UI on 127.0.0.1 (default 8089)")
    p.add_argument("--quiet", action="store_true", help="no periodic statistics, only the final summary")
    p.add_argument("--drill", nargs="?", const="quick", choices=["quick", "full"],
                   help="the fault drill under the mixed load: reloads, canary shift, kill and return "
                        "(full: also a graceful drain); lab only")
    p.add_argument("--victim", default="backend-2", help="the instance the drill kills (default backend-2)")
    args = p.parse_args(argv)
    try:
        if args.users < 1:
            raise UsageError(f"--users {args.users}: must be at least 1")
        if not args.spawn_rate > 0:
            raise UsageError(f"--spawn-rate {args.spawn_rate:g}: must be above 0")
        if args.run_time is not None and seconds(args.run_time) < 1:
            raise UsageError(f"--run-time {args.run_time}: must be at least 1s")
        if args.ca_cert and not Path(args.ca_cert).is_file():
            raise UsageError(f"--ca-cert {args.ca_cert}: no such file")
        if args.drill and args.web:
            raise UsageError("--drill runs headless: drop --web")
        if args.drill and args.scenario != "mixed":
            raise UsageError(f"--drill runs under the mixed load, not --scenario {args.scenario}")
        if not 1 <= args.web_port <= 65535:
            raise UsageError(f"--web-port {args.web_port}: not a port")
    except UsageError as exc:
        p.error(str(exc))
    return args


def _label(targets) -> str:
    return "+".join(re.sub(r"[^A-Za-z0-9.-]+", "_", t.name.split("://")[-1]) for t in targets)


def locust_argv(args, targets, out: Path) -> list[str]:
    scenario = "drill" if args.drill else args.scenario
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--host", ",".join(t.url for t in targets), "--target-names", ",".join(t.name for t in targets),
            "--users", str(args.users), "--spawn-rate", f"{args.spawn_rate:g}",
            "--scenario", scenario, "--gates", args.gates, "--report-dir", str(out),
            "--csv", str(out / "locust"), "--html", str(out / "report.html")]
    if args.ca_cert:
        argv += ["--ca-cert", args.ca_cert]
    if args.no_forwarded_for:
        argv += ["--no-forwarded-for"]
    if args.web:
        argv += ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
        if args.run_time:
            argv += ["--autostart", "--run-time", args.run_time]
    else:
        argv += ["--headless", "--run-time", DRILL_MAX_RUN_TIME if args.drill else (args.run_time or "60s")]
    if args.quiet:
        argv += ["--only-summary"]
    return argv + list(gates_mod.SCENARIOS[args.scenario])


def new_run_folder(report_dir: str, run_id: str) -> Path:
    """The run's folder, created; a run never writes over another's."""
    out = Path(report_dir) / run_id
    if out.exists():
        raise UsageError(f"--run-id {run_id}: {out} exists")
    out.mkdir(parents=True)
    return out


def stop_locust(child: subprocess.Popen, sig: int = signal.SIGUSR1, timeout: float = 60) -> int:
    """End the load early; Locust still writes its reports and the summary
    (SIGUSR1: see hooks.py; SIGINT is Ctrl-C)."""
    if child.poll() is None:
        child.send_signal(sig)
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def wait_spawned(child: subprocess.Popen, out: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "spawned.json").exists():
        if child.poll() is not None:
            raise RuntimeError(f"Locust exited ({child.returncode}) before all users were started")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all users started within {timeout:.0f} s")
        time.sleep(0.2)


def run_drill(args, lab: dict, argv: list[str], out: Path) -> int:
    from load_tests.drill import Drill, DrillError, write  # the drill needs the lab tooling

    failures = (DrillError, RuntimeError, subprocess.SubprocessError)
    drill = Drill(lab, victim=args.victim, full=args.drill == "full")
    try:
        drill.preflight()
    except failures as exc:
        print(f"python -m load_tests: error: the lab is not ready for a drill: {exc}", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv)
    problem, restored = None, []
    try:
        wait_spawned(child, out, timeout=args.users / args.spawn_rate + 60)
        drill.run()
    except failures as exc:
        problem = f"drill stopped: {exc}"
    finally:
        try:
            restored = drill.restore()
        except failures as exc:
            problem = f"{problem}; " if problem else ""
            problem += f"could not restore the lab, check {args.victim} and the canary share: {exc}"
        finally:
            rc = stop_locust(child)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if not (out / "summary.json").exists():
        print(f"Locust wrote no summary (exit {rc}): the drill cannot be judged", file=sys.stderr)
        return 2
    summary = json.loads((out / "summary.json").read_text())
    events = drill.judge(summary, load_end=summary["stopped"])
    print("\n" + write(events, out, restored), flush=True)
    return max(rc, 0 if all(e.ok for e in events) else 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = "drill" if args.drill else args.scenario
    try:
        gates_mod.for_scenario(gates_mod.load(args.gates), scenario, args.gates)
        lab = load_lab()
        targets = resolve(args.target, edge=args.edge, lab=lab)
    except (gates_mod.GateError, TargetError) as exc:
        print(f"python -m load_tests: error: {exc}", file=sys.stderr)
        return 2
    if args.drill and lab is None:
        print("python -m load_tests: error: --drill needs the lab (.lab/lab.json)", file=sys.stderr)
        return 2
    if args.drill and args.victim not in stable_instances(lab):
        print(f"python -m load_tests: error: --victim {args.victim}: not a stable backend of the lab "
              f"(have: {', '.join(stable_instances(lab))})", file=sys.stderr)
        return 2
    run_id = args.run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{scenario}-{_label(targets)}"
    try:
        out = new_run_folder(args.report_dir, run_id)
    except UsageError as exc:
        print(f"python -m load_tests: error: {exc}", file=sys.stderr)
        return 2
    argv = locust_argv(args, targets, out)
    (out / "command.json").write_text(json.dumps({"argv": sys.argv, "locust": argv}, indent=1))
    print(f"load test {run_id}: reports in {out}", flush=True)
    if args.drill:
        rc = run_drill(args, lab, argv, out)
    else:
        child = subprocess.Popen(argv)
        try:
            rc = child.wait(None if args.web else seconds(args.run_time or "60s") + OVERRUN_S)
        except subprocess.TimeoutExpired:
            print(f"Locust did not stop {OVERRUN_S} s after --run-time: stopping it", file=sys.stderr)
            rc = max(stop_locust(child), 2)
        except KeyboardInterrupt:
            # The terminal's Ctrl-C reached Locust too (same process group):
            # it is writing its reports; a second signal would cut that short.
            rc = child.wait()
    print(f"reports: {out} (report.html, summary.txt, locust_*.csv)", flush=True)
    return rc
