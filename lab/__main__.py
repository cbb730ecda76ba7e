"""python -m lab up|converge|verify|down|status|instance  (docs/lab.md)"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from automata_lb import playbook

from . import stack


def _run(cmd: list[str]) -> int:
    env = {**os.environ, "ANSIBLE_CONFIG": str(stack.ROOT / "ansible.cfg")}
    return subprocess.run(cmd, cwd=stack.ROOT, env=env).returncode


def converge(extra: list[str]) -> int:
    if not stack.INVENTORY.exists():
        print(f"lab: {stack.INVENTORY.relative_to(stack.ROOT)} is missing: the lab is not up (`make lab`)", file=sys.stderr)
        return 1
    run = playbook.run(stack.ROOT / "playbooks" / "edge.yml", stack.INVENTORY, args=extra,
                       on_line=lambda line: print(line, flush=True))
    print(f"lab: converge finished in {run.seconds:.1f}s (rc={run.rc})", flush=True)
    return run.rc


def verify(extra: list[str]) -> int:
    return _run([sys.executable, "-m", "pytest", "tests/lab", *extra])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build images if needed and start the lab (idempotent)")
    sub.add_parser("converge", help="run playbooks/edge.yml on the lab; extra args go to ansible-playbook")
    sub.add_parser("verify", help="run the lab test suite; extra args go to pytest")
    d = sub.add_parser("down", help="remove the lab's containers, network and .lab/")
    d.add_argument("--images", action="store_true", help="also remove the lab's images")
    sub.add_parser("status", help="list the lab's containers")
    i = sub.add_parser("instance", help="start or stop one backend instance (the rehearsal inventory's "
                                        "instance playbook calls this)")
    i.add_argument("state", choices=("started", "stopped"))
    i.add_argument("name")
    i.add_argument("--address", help="its address on the lab network (started)")
    i.add_argument("--track", choices=("stable", "canary"), default="stable")
    i.add_argument("--release", help="what it runs (default: its track's release)")
    args, extra = parser.parse_known_args()
    if extra and args.command not in ("converge", "verify"):
        parser.error(f"unexpected arguments: {' '.join(extra)}")

    if args.command == "up":
        stack.up()
    elif args.command == "converge":
        return converge(extra)
    elif args.command == "verify":
        return verify(extra)
    elif args.command == "down":
        stack.down(remove_images=args.images)
    elif args.command == "instance":
        if args.state == "stopped":
            stack.stop_instance(args.name)
        elif not args.address:
            parser.error("instance started: give --address")
        else:
            stack.start_instance(args.name, args.address, args.track, args.release)
    elif args.command == "status":
        for name, state in stack.status() or [("(no lab containers)", "")]:
            print(f"{name:32} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
