"""python -m monitoring build|check|rules  (docs/monitoring.md)

build   write monitoring/load-balancer-dashboard.json from monitoring/dashboard.py
check   exit 1 when the committed dashboard differs from the builder's output
rules   print the alert rules (Prometheus rule-file YAML) for the default thresholds;
        --runbook-base-url URL links the runbooks at URL instead of the repository's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from . import dashboard, rules

DASHBOARD_JSON = Path(__file__).with_name("load-balancer-dashboard.json")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "check", "rules"])
    parser.add_argument("--runbook-base-url", default=rules.RUNBOOK_BASE_URL, metavar="URL",
                        help="where docs/runbooks.md is published (rules)")
    args = parser.parse_args()
    if args.command == "build":
        DASHBOARD_JSON.write_text(dashboard.render())
        print(f"wrote {DASHBOARD_JSON}")
    elif args.command == "check":
        if not DASHBOARD_JSON.exists() or DASHBOARD_JSON.read_text() != dashboard.render():
            print(f"{DASHBOARD_JSON} is out of date: run `python -m monitoring build` and commit it",
                  file=sys.stderr)
            return 1
        print(f"{DASHBOARD_JSON.name} matches the builder")
    else:
        try:
            groups = rules.rule_groups(rules.load(), runbook_base=args.runbook_base_url)
        except ValueError as exc:
            parser.error(str(exc))
        yaml.safe_dump(groups, sys.stdout, sort_keys=False, width=200)
    return 0


if __name__ == "__main__":
    sys.exit(main())
