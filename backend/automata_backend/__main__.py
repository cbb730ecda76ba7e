"""python3 -m automata_backend --instance backend-1 --version stable --port 8000 --admin-port 9000"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from . import logs
from .server import serve
from .state import Backend, InvalidField, Settings
from .tuning import VARIABLES, Tuning


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    epilog = "environment (tuning, checked at start):\n" + "\n".join(
        f"  {name:30} {doc}" for name, (_, _, doc) in VARIABLES.items())
    parser = argparse.ArgumentParser(prog="python3 -m automata_backend", description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance", required=True, help="name in X-Backend-Instance, e.g. backend-1")
    parser.add_argument("--version", required=True, help="name in X-Backend-Version, e.g. stable or canary")
    parser.add_argument("--host", default="127.0.0.1", help="main app address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="main app port, the one balancers use")
    parser.add_argument("--admin-host", default="127.0.0.1", help="fault-injection address (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=9000, help="fault-injection port")
    parser.add_argument("--grace-period", type=float, default=30.0,
                        help="seconds to drain after SIGTERM before cutting what still runs")
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="concurrent requests + WebSockets before the traffic routes answer 503")
    args = parser.parse_args(argv)
    try:
        args.settings = Settings(args.instance, args.version, args.grace_period, args.max_connections)
    except InvalidField as exc:
        parser.error(f"--{exc.field.replace('_', '-')} {exc.message}")
    try:
        args.tuning = Tuning.from_env(os.environ)
    except InvalidField as exc:
        parser.error(f"{exc.field} {exc.message}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.instance)
    logging.getLogger("automata_backend").info("tuning", extra={"fields": args.tuning.describe()})
    backend = Backend(args.settings, tuning=args.tuning)
    return asyncio.run(serve(backend, args.host, args.port, args.admin_host, args.admin_port))


if __name__ == "__main__":
    sys.exit(main())
