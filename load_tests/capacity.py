"""python -m load_tests.capacity: how much of the mixed scenario the tier
holds within the default gates, and whether Locust or the tier was the limit.

    .venv/bin/python -m load_tests.capacity --target nginx --users 50,100,200,400 --step-time 40s

Runs `python -m load_tests --scenario mixed` once per user count (each run
keeps its own report folder), stops after the first count that breaks a
gate, and prints one table: requests/s, failures, p99 per traffic class,
the gates' verdict, and the CPU of the load generator (one core at most:
Locust's users are greenlets on one thread) and of the whole machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from load_tests.runner import REPORTS, seconds
from load_tests.targets import ROOT

CLASSES = ("api", "auth", "ws_connect", "ws_message", "ai_first_byte", "ai_total")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load_tests.capacity", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="nginx", help="as for python -m load_tests (default nginx)")
    p.add_argument("--users", default="50,100,200,400", help="user counts to try, ascending (default 50,100,200,400)")
    p.add_argument("--spawn-rate", type=float, default=50, help="users started per second (default 50)")
    p.add_argument("--step-time", default="40s", help="run time per user count, ramp included (default 40s)")
    p.add_argument("--gates", default=None, help="gate file (default load_tests/gates.toml)")
    p.add_argument("--keep-going", action="store_true", help="try every count, also after a broken gate")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.users.split(",")]
    except ValueError:
        p.error(f"--users {args.users!r}: expected comma-separated integers")
    if not args.levels or any(n < 1 for n in args.levels) or args.levels != sorted(args.levels):
        p.error(f"--users {args.users!r}: positive and ascending")
    try:
        seconds(args.step_time)
    except ValueError as exc:
        p.error(str(exc).replace("--run-time", "--step-time"))
    return args


def row(users: int, summary: dict) -> list[str]:
    g = summary["generator"]
    p99 = [str(summary["classes"].get(c, {}).get("p99", "-")) for c in CLASSES]
    broken = [x["gate"] for x in summary["gates"] if not x["ok"]]
    return [str(users), f"{summary['rps']:.0f}", str(summary["failures"]), str(summary["rate_limited"]), *p99,
            f"{g['cpu_mean_pct']:.0f}/{g['cpu_max_pct']:.0f}", f"{g['machine_cpu_mean_pct']:.0f}",
            "pass" if not broken else "FAIL: " + ", ".join(broken)]


HEADER = ["users", "req/s", "failed", "429", *(f"{c} p99" for c in CLASSES), "locust cpu % avg/max",
          "machine cpu %", "gates"]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
                     for r in [HEADER, *rows])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows, results = [], []
    for users in args.levels:
        run_id = f"{stamp}-capacity-{users}"
        cmd = [sys.executable, "-m", "load_tests", "--scenario", "mixed", "--target", args.target,
               "--users", str(users), "--spawn-rate", f"{args.spawn_rate:g}", "--run-time", args.step_time,
               "--quiet", "--run-id", run_id] + (["--gates", args.gates] if args.gates else [])
        print(f"capacity: {users} users ...", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        path = REPORTS / run_id / "summary.json"
        if not path.exists():
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
            return 2
        summary = json.loads(path.read_text())
        rows.append(row(users, summary))
        results.append({"users": users, "run": str(path.parent), "rps": summary["rps"],
                        "failures": summary["failures"], "classes": summary["classes"],
                        "generator": summary["generator"], "gates": summary["gates"]})
        print(table(rows[-1:]), flush=True)
        if proc.returncode != 0 and not args.keep_going:
            break
    out = REPORTS / f"{stamp}-capacity.json"
    out.write_text(json.dumps(results, indent=1))
    print("\n" + table(rows))
    held = [r["users"] for r in results if all(g["ok"] for g in r["gates"])]
    print(f"\nheld within the gates: {max(held) if held else 'none of the counts tried'} users; runs in {REPORTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
