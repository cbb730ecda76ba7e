"""python -m bench.ablation: what each part of the rendered HAProxy config costs.

Renders haproxy-ours with the role (as `python -m bench` does), then writes
one variant per feature group with that group's lines taken out, and
measures minimal, ours and every variant interleaved in the same rounds (the
order rotates each round), so a slow minute of the shared machine moves every
variant, not one.  Prints each variant's median LB CPU per request, its
spread over the rounds and its difference to ours.  A variant is a
measurement aid, not a config to ship: some take out behaviour the policy
needs.  `--config NAME=PATH` adds any other haproxy.cfg (its bind port
rewritten) to the same rounds, e.g. a candidate rendering.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench import render
from bench.__main__ import CLIENT_CPUS, LB_CPUS
from bench.load import LoadSettings
from bench.run import measure, probe
from bench.servers import Server, fill_template, haproxy_argv, nginx_argv
from bench.targets import BACKEND_PORT

PORT = 18200  # the variants listen on 18200, 18201, ...; their stats pages 18300, ...
PATH = "/api/"


def _drop(*patterns: str) -> Callable[[str], str]:
    """A variant that removes every line matching one of the patterns."""
    regexes = [re.compile(p) for p in patterns]
    return lambda text: "\n".join(line for line in text.splitlines()
                                  if not any(r.search(line) for r in regexes)) + "\n"


def _sub(pattern: str, repl: str) -> Callable[[str], str]:
    return lambda text: re.sub(pattern, repl, text, flags=re.M)


VARIANTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "no-rate": ("without per-client rates (track-sc1, GCRA rules)",
                _drop(r"track-sc1|sc1_tracked")),
    "no-inflight": ("without requests in flight (track-sc2 + its deny)", _drop(r"track-sc2|sc2_conn_cur")),
    "no-forwarded": ("without X-Forwarded-For/-Proto, X-Real-IP and trusted-proxy rules",
                     _drop(r"X-Forwarded-|X-Real-IP|set-src|lb_trusted_peer")),
    "no-canary": ("without canary/A-B rules (acls, canary use_backends)",
                  _drop(r"acl (ab_variant|canary_dice|canary_track)", r"use_backend\s+\w+_canary ")),
    "no-retry-on": ("without retry-on, redispatch, disable-l7-retry (retries stay)",
                    _drop(r"^\s+(retry-on|option redispatch|http-request disable-l7-retry)\b")),
    "no-headers": ("without the security headers (http-after-response)", _drop(r"http-after-response")),
    "no-log": ("without logs", _sub(r"^(\s+)option(\s+)httplog$", r"\1no log")),
    "no-observe": ("health checks without observe layer7 / error-limit",
                   _sub(r" observe layer7 error-limit \d+ on-error mark-down", "")),
    "no-server-limits": ("servers without maxconn/maxqueue/slowstart",
                         _sub(r" slowstart \S+ weight \d+ maxconn \d+ maxqueue \d+", "")),
    "no-flood": ("without tcp-request connection tracking", _drop(r"tcp-request connection")),
}


def _runnable(text: str, port: int, stats_port: int, workdir: Path) -> str:
    """Give a config its own listening port, stats port and admin socket."""
    text = re.sub(r"^(\s+bind\s+)127\.0\.0\.1:1802[01]\b", rf"\g<1>127.0.0.1:{port}", text, flags=re.M)
    text = re.sub(r"^(\s+bind\s+)127\.0\.0\.1:18029\b", rf"\g<1>127.0.0.1:{stats_port}", text, flags=re.M)
    return re.sub(r"^(\s+stats socket\s+)\S+", rf"\g<1>{workdir / 'admin.sock'}", text, flags=re.M)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (default 4)")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                        help="measure only these variants (repeatable; default all)")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=PATH",
                        help="also measure this haproxy.cfg (repeatable)")
    parser.add_argument("--no-ours", action="store_true", help="do not render and measure haproxy-ours")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = LoadSettings(threads=2, connections=50, duration_s=args.duration)
    workdir = Path(tempfile.mkdtemp(prefix="automata-ablation-"))
    configs: dict[str, tuple[str, str]] = {}  # name -> (description, config text)
    minimal = fill_template("haproxy-minimal.cfg", workdir / "minimal.cfg", port=PORT, backend_port=BACKEND_PORT)
    configs["minimal"] = ("bench/configs/haproxy-minimal.cfg", minimal.read_text())
    if not args.no_ours:
        ours = render.haproxy(workdir / "ours-render", 18021, BACKEND_PORT, stats_port=18029).read_text()
        configs["ours"] = ("roles/haproxy_lb as rendered for the benchmark", ours)
        for name in args.variant or VARIANTS:
            note, edit = VARIANTS[name]
            configs[name] = (note, edit(ours))
    for item in args.config:
        name, _, path = item.partition("=")
        configs[name] = (path, Path(path).read_text())
    samples: dict[str, list[float]] = {name: [] for name in configs}
    started = time.time()
    try:
        with ExitStack() as stack:
            backend_dir = workdir / "backend"
            backend_dir.mkdir()
            backend = stack.enter_context(Server(
                "backend", nginx_argv(fill_template("backend.conf", backend_dir / "backend.conf", port=BACKEND_PORT)),
                BACKEND_PORT, backend_dir, cpus=CLIENT_CPUS))
            servers = {}
            for i, (name, (_, text)) in enumerate(configs.items()):
                d = workdir / name
                d.mkdir(exist_ok=True)
                conf = d / "haproxy.cfg"
                conf.write_text(_runnable(text, PORT + i, PORT + 100 + i, d))
                servers[name] = stack.enter_context(Server(name, haproxy_argv(conf), PORT + i, d, cpus=LB_CPUS))
                probe(PORT + i, PATH)
            for server in servers.values():  # warm-up: pools filled, checks settled
                measure(f"http://127.0.0.1:{server.port}{PATH}", settings, repeats=0, warmup_s=2, backend=backend,
                        lb=server, cpus=CLIENT_CPUS)
            names = list(servers)
            for n in range(args.rounds):
                for name in names[n % len(names):] + names[:n % len(names)]:
                    print(f"[ablation] {time.strftime('%H:%M:%S')} round {n + 1}: {name}", file=sys.stderr, flush=True)
                    [sample] = measure(f"http://127.0.0.1:{servers[name].port}{PATH}", settings, repeats=1,
                                       warmup_s=0, backend=backend, lb=servers[name], cpus=CLIENT_CPUS)
                    if sum(sample.errors.values()):
                        print(f"[ablation] {name}: errors {sample.errors}", file=sys.stderr)
                    samples[name].append(sample.lb_us_per_req)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(configs, samples, args, time.time() - started))
    return 0


def report(configs: dict[str, tuple[str, str]], samples: dict[str, list[float]], args, seconds: float) -> str:
    ref = statistics.median(samples["ours"]) if "ours" in samples else None
    base = statistics.median(samples["minimal"])
    lines = [f"HAProxy LB CPU µs per request on {PATH}, median of {args.rounds} interleaved rounds of "
             f"{args.duration:g} s ({seconds:.0f} s in all)", "",
             f"{'config':<18} {'µs/req':>7} {'min-max':>13} {'vs minimal':>10} {'vs ours':>8}  what"]
    for name, values in samples.items():
        med = statistics.median(values)
        vs_ours = f"{med - ref:+.1f}" if ref is not None and name != "ours" else ""
        lines.append(f"{name:<18} {med:>7.1f} {min(values):>6.1f}-{max(values):<6.1f} {med / base:>10.3f} "
                     f"{vs_ours:>8}  {configs[name][0]}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
