"""automata-lb: one command to see, scale, roll and roll back the tier.

\b
    automata-lb status                       # the lab (default target)
    automata-lb --inventory inventories/prod status --json
    automata-lb health-check                 # exit 1 when anything is unhealthy

\b
Exit codes: 0 done / healthy, 1 something is down or an operation failed,
2 bad arguments (nothing changed), 3 the target cannot be reached.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live

from infra import naming
from infra.settings import ConfigError, Invalid, pinned_image
from monitoring import canary_analysis
from traffic.model import PolicyError, duration_ms

from . import autoscale, canary, edge, health, history, instances, lab_ops
from . import stack as stack_ops
from .lab_ops import LabState
from .output import Column, emit_json, number, show, table
from .prom import Prometheus, PrometheusError, backend_figures, duration_seconds
from .targets import ROOT, STACKS, Target, TargetError, inventory, lab

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3

app = typer.Typer(name="automata-lb", help=__doc__, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
out = Console()
# Errors are read by scripts as much as by people: one line each, never wrapped.
err = Console(stderr=True, soft_wrap=True)


class State:
    target_kind: str = "lab"
    inventory: Path | None = None
    stack: str | None = None
    target: Target | None = None   # resolved once per command


state = State()


def version() -> str:
    """The installed package's version; from pyproject.toml when it runs uninstalled."""
    try:
        return importlib.metadata.version("automata-lb")
    except importlib.metadata.PackageNotFoundError:
        try:
            return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _print_version(given: bool) -> None:
    if given:
        out.print(f"automata-lb {version()}", highlight=False)
        raise typer.Exit(OK)


# Checks of numeric options, run by typer as it reads them: a bad value
# exits 2 with "Invalid value for '--NAME'" before the command starts.

def bounded(low: float, high: float | None = None, *, above: bool = False, unit: str = "") -> Callable[[Any], Any]:
    """At least `low` (or above it), at most `high`; finite in every case."""
    wanted = (f"between {low:g} and {high:g}" if high is not None else f"above {low:g}" if above
              else f"at least {low:g}") + (f" {unit}" if unit else "")

    def check(value: Any) -> Any:
        if value is None:
            return value
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise typer.BadParameter(f"must be {wanted}, got {value:g}")
        return value

    return check


def prometheus_window(value: str) -> str:
    try:
        duration_seconds(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.callback()
def main(
    target: Annotated[str, typer.Option(help="The Podman lab (the default).")] = "lab",
    inventory_path: Annotated[Path | None, typer.Option(
        "--inventory", "-i", help="Edge VMs of an Ansible inventory, e.g. inventories/prod.")] = None,
    stack: Annotated[str | None, typer.Option(help=f"A Pulumi stack: {', '.join(STACKS)}.")] = None,
    vault_password_file: Annotated[Path | None, typer.Option(
        help="Ansible Vault password file of the inventory (also read from ANSIBLE_VAULT_PASSWORD_FILE).")] = None,
    _version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                           callback=_print_version)] = False,
) -> None:
    if target != "lab":
        raise typer.BadParameter("only 'lab' is a --target; use --inventory PATH or --stack NAME", param_hint="--target")
    if inventory_path and stack:
        raise typer.BadParameter("give --inventory or --stack, not both", param_hint="--stack")
    if stack is not None and stack not in STACKS:
        raise typer.BadParameter(f"{stack!r} is not one of {', '.join(STACKS)}", param_hint="--stack")
    if vault_password_file is not None:
        if not vault_password_file.is_file():
            raise typer.BadParameter(f"{vault_password_file} is not a file", param_hint="--vault-password-file")
        # Every Ansible command the CLI runs (ansible-inventory, the renders) reads it from there.
        os.environ["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file.resolve())
    state.inventory, state.stack, state.target = inventory_path, stack, None
    state.target_kind = "stack" if stack else "inventory" if inventory_path else "lab"


def resolve() -> Target:
    """The lab or the inventory; exits 3 with the reason when unreachable."""
    try:
        if state.target is None:
            state.target = inventory(state.inventory) if state.inventory else lab()
        return state.target
    except TargetError as exc:
        err.print(f"automata-lb: {exc}")
        raise typer.Exit(UNREACHABLE) from None


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


# --- status --------------------------------------------------------------------

def collect_status(target: Target) -> dict:
    nodes = edge.probe_all(target)
    figures: dict[str, dict] = {}
    prometheus = None
    if target.prometheus_url:
        try:
            figures = backend_figures(Prometheus(target.prometheus_url, timeout=2))
            prometheus = target.prometheus_url
        except PrometheusError:
            prometheus = None
    servers: dict[str, dict] = {}
    for node in nodes:
        for s in node.get("haproxy", {}).get("servers", []):
            if s.get("backup"):
                continue  # a stable server standing behind a canary pool
            entry = servers.setdefault(s["server"], {"server": s["server"], "address": s["address"], "states": {},
                                                     "weights": {}, "sessions": 0})
            entry["states"][f"{node['node']}/{s['backend']}"] = s["status"]
            entry["weights"][f"{node['node']}/{s['backend']}"] = s["weight"]
            entry["sessions"] += s["sessions"]
    versions = {b.name: b.version for b in target.backends}
    recorded = instances.of(target).releases()
    releases = {b.name: recorded.get(b.name, b.version) for b in target.backends}
    for name, entry in servers.items():
        distinct = set(entry["states"].values())
        entry["state"] = distinct.pop() if len(distinct) == 1 else "MIXED"
        entry["weight"] = max(entry["weights"].values(), default=0)
        entry["version"] = versions.get(name, "")
        entry["release"] = releases.get(name, "")
        entry.update(figures.get(name, {}))
    floating = health.floating_addresses(nodes)
    healthy = all(n.get("reachable") and n["nginx"]["active"] and n["haproxy"]["active"] for n in nodes) \
        and all(not any(st.startswith("DOWN") for st in s["states"].values()) for s in servers.values()) \
        and all(len(holders) == 1 for holders in floating.values())
    return {"target": target.name, "time": time.time(), "healthy": healthy, "prometheus": prometheus,
            "edges": nodes, "floating_addresses": floating,
            "servers": sorted(servers.values(), key=lambda s: s["server"])}


def _vrrp_cell(keepalived: dict | None) -> str:
    """keepalived's state and the addresses the node holds, or '-' without one."""
    if not keepalived or not keepalived.get("addresses"):
        return "-"
    if not keepalived["active"]:
        return "[red]stopped[/]"
    state = keepalived.get("state") or "?"
    colour = {"MASTER": "green", "BACKUP": "default"}.get(state, "red")
    return f"[{colour}]{state}[/]" + "".join(f" {a}" for a in keepalived["holds"])


def _lb_cell(lb: dict) -> str:
    state = "[green]up[/]" if lb["active"] else "[red]DOWN[/]"
    return f"{state} {lb['version'].split('-')[0]} · {lb['config_hash'][:8]} · {_ago(lb['last_reload'])}"


# Columns left out first when a table does not fit (output.table): the
# figures Prometheus adds, then the ones `--json` and `metrics` also give.
EDGE_COLUMNS = (Column("node"), Column("nginx · config · reloaded", wrap=True),
                Column("haproxy · config · reloaded", wrap=True), Column("vrrp"), Column("canary", drop=1))
SERVER_COLUMNS = (Column("server"), Column("track", drop=4), Column("release"),
                  Column("state"), Column("weight", "right"), Column("sessions", "right", drop=5),
                  Column("req/s", "right", drop=3), Column("5xx", "right", drop=2), Column("p99", "right", drop=1))


def render_status(doc: dict, console: Console = out) -> Group:
    edge_rows = []
    for n in doc["edges"]:
        if not n.get("reachable"):
            edge_rows.append([n["node"], "[red]unreachable[/]", n.get("error", ""), "", ""])
            continue
        share = n["haproxy"].get("canary_percent")
        edge_rows.append([n["node"], _lb_cell(n["nginx"]), _lb_cell(n["haproxy"]), _vrrp_cell(n.get("keepalived")),
                          "-" if share is None else f"{share}%"])
    colour = {"UP": "green", "DRAIN": "yellow", "MAINT": "yellow", "MIXED": "yellow"}
    server_rows = []
    for s in doc["servers"]:
        st = s["state"]
        server_rows.append([s["server"], s["version"], s["release"] or "-", f"[{colour.get(st.split()[0], 'red')}]{st}[/]",
                            str(s["weight"]), str(s["sessions"]), number(s.get("rps")),
                            number(s.get("error_ratio"), scale=100, suffix="%"),
                            number(s.get("p99_s"), ".0f", scale=1000, suffix=" ms")])
    footer = ("metrics from " + doc["prometheus"]) if doc["prometheus"] else "no Prometheus: figures from the nodes only"
    holders = [f"floating address {address}: " + (", ".join(nodes) if len(nodes) == 1 else
                                                   f"[red]{len(nodes)} holders[/] {', '.join(nodes)}".rstrip())
               for address, nodes in doc.get("floating_addresses", {}).items()]
    return Group(table(f"Edge nodes ({doc['target']})", EDGE_COLUMNS, edge_rows, console), *holders,
                 table("Backend servers (HAProxy on every edge node)", SERVER_COLUMNS, server_rows, console),
                 f"[dim]{footer}; {datetime.now(UTC):%H:%M:%S} UTC[/]")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    watch: Annotated[float | None, typer.Option(help="Refresh every N seconds until Ctrl-C.",
                                                callback=bounded(0.5, unit="seconds"))] = None,
) -> None:
    """Edge nodes (NGINX, HAProxy: up, version, config, last reload), every backend
    server's state, weight and sessions, and with Prometheus its rate, 5xx and p99."""
    target = resolve()
    doc = collect_status(target)
    if as_json:
        emit_json(doc)
    elif watch:
        with Live(render_status(doc), console=out, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(watch)
                    doc = collect_status(target)
                    live.update(render_status(doc))
            except KeyboardInterrupt:
                pass
    else:
        show(out, render_status(doc))
    raise typer.Exit(OK if doc["healthy"] else FAILED)


# --- health-check --------------------------------------------------------------

@app.command("health-check")
def health_check(as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False) -> None:
    """Every health endpoint of every component; exit 1 if any fails."""
    target = resolve()
    checks = health.run(target)
    ok = all(c.ok for c in checks)
    if as_json:
        emit_json({"target": target.name, "healthy": ok, "checks": [c.as_dict() for c in checks]})
    else:
        columns = (Column("component"), Column("endpoint"), Column("status"),
                   Column("ms", "right", drop=1), Column("ok"))
        rows = [(c.component, c.endpoint, c.detail or str(c.status or "no answer"), number(c.ms, ".0f"),
                 "[green]yes[/]" if c.ok else "[red]NO[/]") for c in checks]
        show(out, table(f"Health ({target.name})", columns, rows, out))
    raise typer.Exit(OK if ok else FAILED)


# --- metrics -------------------------------------------------------------------

def collect_metrics(target: Target, window: str) -> dict:
    if target.prometheus_url:
        prom = Prometheus(target.prometheus_url)
        try:
            tiers = {
                "nginx": {
                    "rps": prom.by_label(f"sum by (class) (rate(nginx_log_requests_total[{window}]))", "class"),
                    "5xx_ratio": prom.by_label(
                        f'sum by (class) (rate(nginx_log_requests_total{{status=~"5.."}}[{window}]))'
                        f" / sum by (class) (rate(nginx_log_requests_total[{window}]))", "class"),
                    "429_rps": prom.by_label(
                        f'sum by (class) (rate(nginx_log_requests_total{{status="429"}}[{window}]))', "class"),
                    "active_connections": prom.by_label("sum by (instance) (nginx_connections_active)", "instance"),
                },
                "haproxy": {
                    "rps": prom.by_label(
                        f'sum by (proxy) (rate(haproxy_backend_http_responses_total[{window}]))', "proxy"),
                    "5xx_ratio": prom.by_label(
                        f'sum by (proxy) (rate(haproxy_backend_http_responses_total{{code="5xx"}}[{window}]))'
                        f" / sum by (proxy) (rate(haproxy_backend_http_responses_total[{window}]))", "proxy"),
                    "429_rps": prom.by_label(
                        f'sum by (instance) (rate(haproxy_frontend_requests_denied_total{{proxy!="stats"}}[{window}]))',
                        "instance"),
                    "current_connections": prom.by_label("haproxy_process_current_connections", "instance"),
                },
                "backends": backend_figures(prom, window),
            }
            return {"target": target.name, "source": target.prometheus_url, "window": window, "tiers": tiers}
        except PrometheusError as exc:
            err.print(f"automata-lb: Prometheus did not answer ({exc}); reading the nodes instead")
    nodes = edge.probe_all(target)
    sessions: dict[str, int] = {}
    for node in nodes:
        for s in node.get("haproxy", {}).get("servers", []):
            sessions[s["server"]] = sessions.get(s["server"], 0) + s["sessions"]
    return {"target": target.name, "source": "nodes", "tiers": {"haproxy": {"sessions_by_server": sessions}}}


@app.command()
def metrics(
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    window: Annotated[str, typer.Option(help="Rate window, a Prometheus duration.",
                                        callback=prometheus_window)] = "1m",
) -> None:
    """Headline figures per tier and per backend: from Prometheus when the target
    has one, otherwise from the nodes themselves."""
    target = resolve()
    doc = collect_metrics(target, window)
    if as_json:
        emit_json(doc)
        raise typer.Exit(OK)
    for tier, figures in doc["tiers"].items():
        title = f"{tier} ({doc['source']})"
        if tier == "backends":
            columns = (Column("instance"), Column("req/s", "right"), Column("5xx", "right"),
                       Column("p99", "right"))
            rows = [(name, number(f["rps"]), number(f["error_ratio"], scale=100, suffix="%"),
                     number(f.get("p99_s"), ".0f", scale=1000, suffix=" ms")) for name, f in sorted(figures.items())]
        else:
            columns = (Column("figure"), Column("by"), Column("value", "right"))
            rows = [(figure, key, number(value, scale=100, suffix="%") if "ratio" in figure else number(value))
                    for figure, values in figures.items() for key, value in sorted(values.items())]
        show(out, table(title, columns, rows, out))
    raise typer.Exit(OK)


# --- changes -------------------------------------------------------------------
#
# Every change: arguments checked before anything is touched (exit 2, naming
# the argument), the plan printed, --dry-run stops there, production asks
# unless --yes, progress while it runs, a history record to roll back to.

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing production.")]
AllowCapacityDrop = Annotated[bool, typer.Option(
    "--allow-capacity-drop", help="Stack: go ahead although the change lowers a protected stack's capacity "
                                  "(fewer pods, lower HPA bounds, an HPA or PodDisruptionBudget removed).")]
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _release(value: str, param: str) -> str:
    """A lab release name, or the tag of a pinned image reference."""
    if "/" in value or ":" in value or "@" in value:
        _pinned_image(value, param)
        tag = value.rsplit("/", 1)[-1].partition(":")[2] or value.partition("@")[2][:19]
        return tag
    if not RELEASE.match(value):
        raise typer.BadParameter(f"{value!r} is not a release name (letters, digits, . _ -)", param_hint=param)
    return value


def _pinned_image(value: str, param: str) -> str:
    try:
        pinned_image(value)
    except Invalid as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from None
    return value


def _confirm(production: bool, what: str, yes: bool) -> None:
    if not production or yes:
        return
    if not sys.stdin.isatty():
        err.print(f"automata-lb: refusing to {what} on production without --yes (no terminal to ask on)")
        raise typer.Exit(FAILED)
    if not typer.confirm(f"{what} on production?"):
        raise typer.Exit(FAILED)


def _say(message: str) -> None:
    err.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message}")


def _edge_change(command: str, desired_of: Callable[[LabState], LabState], dry_run: bool, yes: bool,
                 details: dict) -> None:
    """A change of the backends of the lab or of an inventory's edge nodes:
    plan `desired_of(what runs)`, refuse what cannot be done here before
    anything changes, print the plan, then (unless --dry-run) reconcile."""
    target = resolve()
    before = lab_ops.current(target)
    try:
        desired = desired_of(copy.deepcopy(before))
        why = lab_ops.refusal(target, before, desired)
    except lab_ops.NoSpare as exc:
        if not (why := instances.of(target).refusal()):
            raise typer.BadParameter(f"{target.name}: {exc}" + ("" if target.kind == "lab" else
                                     f" (declare more in {instances.SPARES_VARIABLE})"), param_hint="COUNT") from None
    if why:
        err.print(f"automata-lb: {command} starts or stops instances: {why}")
        raise typer.Exit(USAGE)
    plan = _edge_plan(before, desired)
    out.print(f"[bold]{command}[/] on {target.name}:")
    for line in plan or ["nothing to change"]:
        out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    if dry_run or not plan:
        raise typer.Exit(OK)
    _confirm(target.production, command, yes)
    started = time.monotonic()
    with out.status("working..."):
        try:
            lab_ops.reconcile(target, desired, say=_say)
        except TargetError as exc:
            err.print(f"automata-lb: {command} stopped: {exc}")
            history.record(target.name, command, before.as_dict(), lab_ops.current(target).as_dict(),
                           outcome="failed", error=str(exc), **details)
            raise typer.Exit(FAILED) from None
    seconds = time.monotonic() - started
    history.record(target.name, command, before.as_dict(), desired.as_dict(), outcome="done",
                   seconds=round(seconds, 1), **details)
    out.print(f"done in {seconds:.0f}s")


def _edge_plan(before: LabState, after: LabState) -> list[str]:
    lines = []
    for name in after.names():
        if name not in before.names():
            lines.append(f"+ start {name} ({after.release(name)}) and add it to both load balancers")
        elif after.release(name) != before.release(name):
            lines.append(f"~ {name}: drain, replace {before.release(name)} -> {after.release(name)}, "
                         "wait for health, enable")
    for name in before.names():
        if name not in after.names():
            lines.append(f"- drain {name}, remove it from both load balancers, stop it (SIGTERM)")
    if after.canary_share != before.canary_share:
        lines.append(f"~ canary share {before.canary_share}% -> {after.canary_share}% on NGINX (checked, reloaded) "
                     "and HAProxy (runtime API), and in the inventory")
    if any(line[0] in "+-" for line in lines):
        lines.append("  then: write the inventory, and the load balancers' pools as a converge would (checked, reload)")
    return lines


def _stack_change(command: str, values_of: Callable[[dict], dict], dry_run: bool, yes: bool,
                  allow_capacity_drop: bool = False, note: str = "") -> None:
    """Plan `values_of(effective config)`, print it and its object diff, then
    (unless --dry-run) confirm on a protected stack, write and apply.  Only
    the keys `values_of` returns change: commands leave out what the user
    did not give.  A change that lowers a protected stack's capacity is
    refused (exit 2, dry run included) without --allow-capacity-drop."""
    name = state.stack
    effective = stack_ops.effective(name)
    values = values_of(effective)
    try:
        change = stack_ops.plan(name, values)
    except ConfigError as exc:
        err.print(f"automata-lb: refused: {exc}")
        raise typer.Exit(USAGE) from None
    # Plans are read by scripts and people alike: one line per change, never wrapped.
    out.print(f"[bold]{command}[/] on stack {name}: " +
              (", ".join(f"{k}: {change.before.get(k)!r} -> {v!r}" for k, v in change.values.items())
               or "nothing to change"), soft_wrap=True, markup=True, highlight=False)
    if note:
        out.print(f"  ({note})", soft_wrap=True, markup=False, highlight=False)
    for line in change.diff or ["no object changes"]:
        out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    protected = stack_ops.protected(name)
    if change.drops and protected and not allow_capacity_drop:
        err.print(f"automata-lb: refused: {command} lowers the capacity of protected stack {name}: "
                  + "; ".join(change.drops) + ". Give --allow-capacity-drop to go ahead.")
        raise typer.Exit(USAGE)
    for line in change.drops:
        out.print(f"  lowers capacity: {line}", soft_wrap=True, markup=False, highlight=False)
    if dry_run or change.empty:
        raise typer.Exit(OK)
    _confirm(protected, f"{command} (stack {name})", yes)
    stack_ops.write(name, change.values)
    history.record(f"stack-{name}", command, change.before, change.values, outcome="written")
    applied, cmd = stack_ops.apply(name)
    if applied:
        out.print(f"applied: {cmd}")
    else:
        out.print(f"stacks/Pulumi.{name}.yaml updated; apply it with:\n  {cmd}")


@app.command("scale-up")
def scale_up(
    count: Annotated[int, typer.Argument(help="Instances to add (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: Annotated[bool, typer.Option("--to", help="COUNT is the total, not the number to add.")] = False,
    traffic_class: Annotated[str, typer.Option("--class", help="Stack: the class to scale.")] = "api",
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """Start instances and put them behind both load balancers, drain first, no request dropped."""
    _scale(+1, count, to, traffic_class, dry_run, yes)


@app.command("scale-down")
def scale_down(
    count: Annotated[int, typer.Argument(help="Instances to remove (with --to: the total wanted).", metavar="COUNT",
                                         callback=bounded(1))],
    to: Annotated[bool, typer.Option("--to", help="COUNT is the total, not the number to remove.")] = False,
    traffic_class: Annotated[str, typer.Option("--class", help="Stack: the class to scale.")] = "api",
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Drain instances, take them out of both load balancers, stop them."""
    _scale(-1, count, to, traffic_class, dry_run, yes, allow_capacity_drop)


def _scale(sign: int, count: int, to: bool, traffic_class: str, dry_run: bool, yes: bool,
           allow_capacity_drop: bool = False) -> None:
    command = "scale-up" if sign > 0 else "scale-down"
    if state.stack:
        if traffic_class not in ("api", "websocket", "ai"):
            raise typer.BadParameter(f"{traffic_class!r} is not one of api, websocket, ai", param_hint="--class")

        def values(cfg: dict) -> dict:
            key = f"{traffic_class}MinReplicas" if cfg["autoscaling"] else "replicas"
            have = cfg[key]
            wanted = count if to else have + sign * count
            if wanted < 1:
                raise typer.BadParameter(f"{key} would become {wanted}; at least 1 must run", param_hint="COUNT")
            if sign * (wanted - have) < 0:  # --to the other way, as the lab refuses it
                other = "scale-down" if sign > 0 else "scale-up"
                raise typer.BadParameter(f"{key} is {have} today; {command} --to {count} would go the other way "
                                         f"(that is `{other} {count} --to`)", param_hint="COUNT")
            return {key: wanted}

        _stack_change(command, values, dry_run, yes, allow_capacity_drop)
        return

    def desired(state_: LabState) -> LabState:
        have = len(state_.backends)
        wanted = count if to else have + sign * count
        if wanted < 1:
            raise typer.BadParameter(f"{have} stable instances run; {wanted} would leave none", param_hint="COUNT")
        if (sign > 0 and wanted < have) or (sign < 0 and wanted > have):
            raise typer.BadParameter(f"{have} run already; --to {count} would go the other way", param_hint="COUNT")
        return lab_ops.with_stable_count(state_, wanted, fleet.spares())

    fleet = instances.of(resolve())
    _edge_change(command, desired, dry_run, yes, {"count": count, "to": to})


@app.command("rolling-update")
def rolling_update(
    release: Annotated[str, typer.Argument(help="Lab: a release name (or an image with a pinned tag); "
                                                 "stack: a pinned image.")],
    dry_run: DryRun = False, yes: Yes = False,
) -> None:
    """One stable instance at a time: drain, replace, wait for health, enable
    (slow start); stop at the first failure and leave the rest as they were."""
    if state.stack:
        image = _pinned_image(release, "RELEASE")
        _stack_change("rolling-update", lambda cfg: {"image": image}, dry_run, yes)
        return
    name = _release(release, "RELEASE")

    def desired(state_: LabState) -> LabState:
        for b in state_.backends:
            state_.releases[b["name"]] = name
        return state_

    _edge_change("rolling-update", desired, dry_run, yes, {"release": name})


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
        _fixed_canary(release, weight, dry_run, yes)
        return
    if resume and release is not None:
        raise typer.BadParameter("--resume goes on with the recorded release; give no RELEASE", param_hint="RELEASE")
    if not resume and release is None:
        raise typer.BadParameter("give the release to deploy", param_hint="RELEASE")
    weights = _steps(steps) if steps is not None else []
    seconds = _duration(interval, "--interval")
    try:
        analysis = canary_analysis.load(analysis_file, sets or ())
    except canary_analysis.AnalysisError as exc:
        raise typer.BadParameter(str(exc), param_hint="--analysis/--set") from None
    if seconds < analysis.check_every_s:
        raise typer.BadParameter(f"{interval} is shorter than the analysis period check_every "
                                 f"({analysis.check_every_s:g}s)", param_hint="--interval")
    if state.stack:
        name = f"stack-{state.stack}"
        tier: canary.Tier = stack_ops.StackCanary(state.stack, _say)
        prom_url = prometheus
        image = _pinned_image(release, "RELEASE") if release else None
        before_doc = {"canaryImage": stack_ops.effective(state.stack).get("canaryImage")}
        production = stack_ops.protected(state.stack)
    else:
        target = resolve()
        if why := instances.of(target).refusal():
            err.print(f"automata-lb: a progressive canary deploys the release onto the canary instances: {why}")
            raise typer.Exit(USAGE)
        name, prom_url, production = target.name, target.prometheus_url, target.production
        tier = lab_ops.LabCanary(target, _say)
        image = _release(release, "RELEASE") if release else None
        before_state = lab_ops.current(target)
        if not before_state.canary_backends:
            raise typer.BadParameter(f"{target.name} has no edge_canary_backends to run a canary on",
                                     param_hint="RELEASE")
        before_doc = {b["name"]: before_state.release(b["name"]) for b in before_state.canary_backends}

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
        rollout = canary.Rollout(name, image, weights, seconds, analysis.as_dict(), before_doc)
    _print_rollout_plan(rollout, analysis)
    if dry_run:
        if state.stack:
            _print_stack_steps(state.stack, rollout)
        raise typer.Exit(OK)
    if not prom_url:
        err.print("automata-lb: the analysis reads Prometheus: "
                  + ("give --prometheus URL" if state.stack else
                     "this lab has none (`make lab` starts it)" if state.target_kind == "lab" else
                     "set monitoring_prometheus_url in the inventory"))
        raise typer.Exit(UNREACHABLE)
    _confirm(production, f"canary-deploy {rollout.release}", yes)
    started = time.monotonic()
    try:
        with canary.lock(name), canary.interruptible():
            final = canary.Runner(rollout, tier, analysis, Prometheus(prom_url), _say).run()
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
    if state.stack:
        before, after = {"canary": rollout.canary_releases_before}, {"release": rollout.release}
    else:
        # What `rollback` reconciles back to: the state the rollout began
        # from (its canary instances' releases as recorded when it began).
        after = lab_ops.current(target).as_dict()
        before = before_state.as_dict() | {"releases": {
            **{k: v for k, v in before_state.releases.items() if k not in rollout.canary_releases_before},
            **{k: v for k, v in rollout.canary_releases_before.items() if v != "canary"}}}
        if resume:
            before["canary_share"] = after["canary_share"]
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


def _duration(value: str, hint: str) -> float:
    try:
        return duration_ms(hint, value) / 1000
    except PolicyError as exc:
        raise typer.BadParameter(exc.problem, param_hint=hint) from None


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


def _print_stack_steps(stack: str, rollout: canary.Rollout) -> None:
    for weight in rollout.steps:
        try:
            change = stack_ops.plan(stack, {"canaryImage": rollout.release,
                                            "trafficPolicy": {"canary": {"share": weight}}})
        except ConfigError as exc:
            err.print(f"automata-lb: refused: {exc}")
            raise typer.Exit(USAGE) from None
        out.print(f"  step {weight}%: then `{' '.join(stack_ops.pulumi_up_command(stack))}`", highlight=False)
        for line in change.diff or ["no object changes"]:
            out.print(f"    {line}", soft_wrap=True, markup=False, highlight=False)


def _fixed_canary(release: str, weight: int, dry_run: bool, yes: bool) -> None:
    if state.stack:
        image = _pinned_image(release, "RELEASE")
        _stack_change("canary-deploy", lambda cfg: {"canaryImage": image, "trafficPolicy": {"canary": {"share": weight}}},
                      dry_run, yes)
        return
    name = _release(release, "RELEASE")
    target = resolve()
    if instances.of(target).refusal():   # nobody to deploy it: the weight alone
        _inventory_canary(target, name, weight, dry_run, yes)
        return

    def desired(state_: LabState) -> LabState:
        if not state_.canary_backends:
            raise typer.BadParameter("the inventory has no edge_canary_backends to run a canary on",
                                     param_hint="RELEASE")
        for b in state_.canary_backends:
            state_.releases[b["name"]] = name
        state_.canary_share = weight
        return state_

    _edge_change("canary-deploy", desired, dry_run, yes, {"release": name, "weight": weight})


def _inventory_canary(target: Target, release: str, weight: int, dry_run: bool, yes: bool) -> None:
    """Edge VMs whose inventory names no instance playbook: the canary
    instances are deployed by the release process; this sends them WEIGHT
    percent once they answer as RELEASE."""
    canaries = [b for b in target.backends if b.version == "canary"]
    if not canaries:
        raise typer.BadParameter(f"{target.name} has no edge_canary_backends to send traffic to", param_hint="RELEASE")
    before = next((n["haproxy"].get("canary_percent") for n in edge.probe_all(target) if n.get("reachable")), None)
    out.print(f"[bold]canary-deploy[/] {release} on {target.name}: canary weight {before}% -> {weight}% on NGINX "
              f"(checked, reloaded) and HAProxy (runtime API) of {len(target.edges)} node(s), and in the inventory; "
              f"first checks that {', '.join(b.name for b in canaries)} answer as {release}",
              soft_wrap=True, highlight=False)
    if dry_run:
        raise typer.Exit(OK)
    versions = edge.backend_versions(target, [{"name": b.name, "address": b.address, "port": b.port} for b in canaries])
    wrong = {n: v for n, v in versions.items() if v != release}
    if wrong:
        err.print(f"automata-lb: refused: the canary instances do not run {release}: "
                  + ", ".join(f"{n} answers {v!r}" for n, v in wrong.items()) + "; deploy it there first")
        raise typer.Exit(FAILED)
    _confirm(target.production, f"canary-deploy {release} at {weight}%", yes)
    try:
        edge.set_canary_weight(target, weight)
    except TargetError as exc:
        err.print(f"automata-lb: canary-deploy stopped: {exc}")
        raise typer.Exit(FAILED) from None
    history.record(target.name, "canary-deploy", {"canary_share": before}, {"canary_share": weight},
                   outcome="done", release=release)
    out.print(f"canary {release} takes {weight}% of canary-class traffic on every node")


def _rollout_target() -> tuple[str, canary.Tier]:
    if state.stack:
        return f"stack-{state.stack}", stack_ops.StackCanary(state.stack, _say)
    target = resolve()
    return target.name, lab_ops.LabCanary(target, _say)


@app.command("canary-status")
def canary_status(as_json: Annotated[bool, typer.Option("--json", help="Print the rollout as JSON.")] = False) -> None:
    """Where the progressive canary stands: phase, step, the weights each load
    balancer sends now, the last analysis and its figures."""
    name, tier = _rollout_target()
    rollout, running = canary.load(name), canary.holder(name)
    try:
        weights = tier.weights()
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
        out.print(f"last analysis ({_ago(last['time'])}, window {last['window_s']:.0f}s): "
                  f"[bold]{last['verdict']}[/]: {last['reason']}", soft_wrap=True, highlight=False)


@app.command("canary-abort")
def canary_abort(dry_run: DryRun = False, yes: Yes = False) -> None:
    """Roll the canary back now: weight 0 on every load balancer, the canary
    instances back to what they ran (stops a rollout running elsewhere first)."""
    name, tier = _rollout_target()
    rollout = canary.load(name)
    if rollout is None or rollout.phase in canary.FINISHED:
        err.print(f"automata-lb: nothing to abort on {name}: {canary.describe(rollout, canary.holder(name))}")
        raise typer.Exit(FAILED)
    out.print(f"[bold]canary-abort[/] {rollout.release} on {name}: weight {rollout.weight}% -> 0% at once, "
              f"then the canary instances back to {rollout.canary_releases_before}", soft_wrap=True, highlight=False)
    if dry_run:
        raise typer.Exit(OK)
    if not state.stack and (why := instances.of(resolve()).refusal()):
        err.print(f"automata-lb: canary-abort puts the canary instances back: {why}")
        raise typer.Exit(USAGE)
    _confirm(bool(state.stack) and stack_ops.protected(state.stack), "canary-abort", yes)
    try:
        canary.abort(name, _say)
        with canary.lock(name), canary.interruptible():
            rollout = canary.load(name)
            if rollout.phase not in canary.FINISHED:
                rollout.reason = f"aborted by hand at {rollout.weight}%"
                rollout.phase = "rolling-back"
                rollout.event("abort")
                canary.save(rollout)
                analysis = canary_analysis.from_dict(rollout.analysis)
                canary.Runner(rollout, tier, analysis, None, _say).run()
    except (canary.Busy, TargetError) as exc:
        err.print(f"automata-lb: canary-abort stopped: {exc}")
        raise typer.Exit(FAILED) from None
    history.record(name, "canary-abort", {"release": rollout.release}, {"canary": rollout.canary_releases_before},
                   outcome=rollout.phase, reason=rollout.reason)
    out.print(f"{rollout.phase}: {rollout.reason}")


# The lab autoscaler's settings when not given.  A stack has no such
# defaults: what auto-scale is not told stays as the stack has it.
LAB_AUTOSCALE = {"min_replicas": 2, "max_replicas": 6, "target_inflight": 20.0, "cooldown": 60.0, "interval": 5.0}


def _given(**options: Any) -> list[str]:
    """The options (by flag) the user gave, of those passed as flag=value."""
    return [flag for flag, value in options.items() if value is not None]


@app.command("auto-scale")
def auto_scale(
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", "--min", callback=bounded(1), help=(
        "Fewest instances (stack: <class>MinReplicas, unchanged if not given; lab: 2)."))] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", "--max", callback=bounded(1), help=(
        "Most instances (stack: <class>MaxReplicas, unchanged if not given; lab: 6)."))] = None,
    cpu: Annotated[int | None, typer.Option("--cpu-threshold", "--cpu", callback=bounded(1, 100, unit="(percent)"),
                                            help="Stack: HPA CPU target, percent (cpuTarget).")] = None,
    memory: Annotated[int | None, typer.Option("--memory-threshold", "--memory",
                                               callback=bounded(1, 100, unit="(percent)"),
                                               help="Stack: HPA memory target, percent (memoryTarget).")] = None,
    traffic_class: Annotated[str, typer.Option("--class", help="Stack: the class whose bounds to set.")] = "api",
    target_inflight: Annotated[float | None, typer.Option(help="Lab: connections in flight per instance to aim for "
                                                               "(20).", callback=bounded(0, above=True))] = None,
    cooldown: Annotated[float | None, typer.Option(help="Lab: seconds below target before scaling down (60).",
                                                   callback=bounded(0, unit="seconds"))] = None,
    interval: Annotated[float | None, typer.Option(help="Lab: seconds between evaluations (5).",
                                                   callback=bounded(0, above=True, unit="seconds"))] = None,
    duration: Annotated[float | None, typer.Option(help="Lab: stop after this many seconds.",
                                                   callback=bounded(0, above=True, unit="seconds"))] = None,
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Stack: turn the HPAs on, changing only the bounds and targets given.
    Lab: run the autoscaler here, scaling on connections in flight per
    instance (Ctrl-C or `disable-auto-scale` stops it)."""
    if state.stack:
        lab_only = _given(**{"--target-inflight": target_inflight, "--cooldown": cooldown, "--interval": interval,
                             "--duration": duration})
        if lab_only:
            raise typer.BadParameter("drives the lab autoscaler; a stack's HPAs take their pace from the "
                                     "scaleUp*/scaleDown* keys of its config", param_hint=lab_only[0])
        if traffic_class not in ("api", "websocket", "ai"):
            raise typer.BadParameter(f"{traffic_class!r} is not one of api, websocket, ai", param_hint="--class")
        low_key, high_key = f"{traffic_class}MinReplicas", f"{traffic_class}MaxReplicas"

        def values(cfg: dict) -> dict:
            low = cfg[low_key] if min_replicas is None else min_replicas
            high = cfg[high_key] if max_replicas is None else max_replicas
            if low > high:
                raise typer.BadParameter(
                    f"need --min-replicas ({low}{'' if min_replicas is not None else f', {low_key} today'}) <= "
                    f"--max-replicas ({high}{'' if max_replicas is not None else f', {high_key} today'})",
                    param_hint="--min-replicas" if min_replicas is not None else "--max-replicas")
            given = {"autoscaling": True, low_key: min_replicas, high_key: max_replicas, "cpuTarget": cpu,
                     "memoryTarget": memory}
            return {key: value for key, value in given.items() if value is not None}

        _stack_change("auto-scale", values, dry_run, yes, allow_capacity_drop)
        return
    stack_only = _given(**{"--cpu-threshold": cpu, "--memory-threshold": memory})
    if stack_only:
        raise typer.BadParameter("sets a stack's HPAs; the lab autoscaler scales on connections in flight "
                                 "(--target-inflight)", param_hint=stack_only[0])
    given = {"min_replicas": min_replicas, "max_replicas": max_replicas, "target_inflight": target_inflight,
             "cooldown": cooldown, "interval": interval}
    lab_policy = {name: LAB_AUTOSCALE[name] if value is None else value for name, value in given.items()}
    min_replicas, max_replicas = lab_policy["min_replicas"], lab_policy["max_replicas"]
    if min_replicas > max_replicas:
        raise typer.BadParameter(f"need --min-replicas ({min_replicas}) <= --max-replicas ({max_replicas})",
                                 param_hint="--min-replicas")
    if max_replicas > instances.LAB_STABLE:
        raise typer.BadParameter(f"the lab holds at most {instances.LAB_STABLE} stable instances",
                                 param_hint="--max-replicas")
    target = resolve()
    if target.kind != "lab":
        err.print(f"automata-lb: auto-scale on {target.name}: the autoscaler runs for the lab; an inventory's "
                  "VMs scale with scale-up/scale-down, a stack's pods with its HPAs (--stack)")
        raise typer.Exit(USAGE)
    if not target.prometheus_url:
        err.print("automata-lb: the lab autoscaler reads Prometheus; this lab has none (`make lab` starts it)")
        raise typer.Exit(UNREACHABLE)
    policy = autoscale.Policy(min_replicas, max_replicas, lab_policy["target_inflight"], lab_policy["cooldown"],
                              lab_policy["interval"])
    out.print(f"autoscaling the lab's stable instances between {min_replicas} and {max_replicas} at "
              f"{policy.target_inflight:g} in flight each (cool-down {policy.cooldown_s:g}s); "
              f"query: {autoscale.INFLIGHT}")
    if dry_run:
        raise typer.Exit(OK)

    def scale_to(n: int) -> None:
        before = lab_ops.current(target)
        desired = lab_ops.with_stable_count(copy.deepcopy(before), n, instances.LabInstances().spares())
        _say(f"scaling to {n}")
        lab_ops.reconcile(target, desired, say=_say)
        history.record(target.name, "auto-scale", before.as_dict(), desired.as_dict(), outcome="done", replicas=n)

    scaler = autoscale.Autoscaler(Prometheus(target.prometheus_url), policy,
                                  replicas=lambda: len(lab_ops.current(target).backends), scale_to=scale_to, say=_say)
    with contextlib.suppress(KeyboardInterrupt):
        scaler.run(duration)


@app.command("disable-auto-scale")
def disable_auto_scale(
    replicas: Annotated[int | None, typer.Option(callback=bounded(1), help=(
        "Stack: the replicas each class keeps once its HPA is gone (default: the highest HPA minimum today, "
        "so no class runs fewer pods than its floor)."))] = None,
    dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False,
) -> None:
    """Stack: remove the HPAs, pinning replicas.  Lab: stop a running autoscaler."""
    if state.stack:
        cfg = stack_ops.effective(state.stack)
        values: dict[str, Any] = {"autoscaling": False}
        note = ""
        if replicas is not None:
            values["replicas"] = replicas
        elif cfg["autoscaling"]:
            # One `replicas` serves every class: the highest floor keeps each
            # class at or above what its HPA guaranteed.
            floors = {f"{c}MinReplicas": cfg[f"{c}MinReplicas"] for c in naming.TRAFFIC_CLASSES}
            values["replicas"] = max(floors.values())
            note = (f"replicas {values['replicas']}: the highest HPA minimum today ("
                    + ", ".join(f"{k} {v}" for k, v in floors.items()) + "); --replicas N to choose")
        _stack_change("disable-auto-scale", lambda _: values, dry_run, yes, allow_capacity_drop, note)
        return
    if replicas is not None:
        raise typer.BadParameter("pins a stack's replicas; the lab's instances are scale-up/scale-down's",
                                 param_hint="--replicas")
    resolve()
    if dry_run:
        out.print("would stop the lab autoscaler, if one runs")
        raise typer.Exit(OK)
    out.print("stopped the lab autoscaler" if autoscale.stop_running() else "no lab autoscaler runs")


@app.command()
def rollback(dry_run: DryRun = False, yes: Yes = False, allow_capacity_drop: AllowCapacityDrop = False) -> None:
    """Back to the state before the last change this tool made (see `history`)."""
    if state.stack:
        entry = history.last_change(f"stack-{state.stack}")
        if not entry:
            err.print(f"automata-lb: nothing to roll back on stack {state.stack}")
            raise typer.Exit(FAILED)
        _stack_change("rollback", lambda cfg: entry["before"], dry_run, yes, allow_capacity_drop)
        return
    target = resolve()
    entry = history.last_change(target.name)
    if not entry:
        err.print(f"automata-lb: nothing to roll back on {target.name}")
        raise typer.Exit(FAILED)
    if target.kind == "inventory" and set(entry["before"]) == {"canary_share"}:  # a weight change on VMs
        share = entry["before"]["canary_share"]
        out.print(f"rolling back `{entry['command']}`: canary weight -> {share}% on every node")
        if dry_run or share is None:
            raise typer.Exit(OK)
        _confirm(target.production, "rollback", yes)
        edge.set_canary_weight(target, share)
        history.record(target.name, "rollback", entry["after"], entry["before"], outcome="done",
                       undoes=entry["command"])
        return
    if set(entry["before"]) != set(LabState.__dataclass_fields__):
        err.print(f"automata-lb: the last change on {target.name}, `{entry['command']}`, recorded no state to go "
                  "back to (it ended a rollout); `history` shows what ran")
        raise typer.Exit(FAILED)
    out.print(f"rolling back `{entry['command']}` of {datetime.fromtimestamp(entry['time']):%Y-%m-%d %H:%M:%S}")
    _edge_change("rollback", lambda _: LabState.from_dict(entry["before"]), dry_run, yes, {"undoes": entry["command"]})


@app.command("load-test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def load_test(ctx: typer.Context) -> None:
    """The Locust scenarios with their SLO gates (python -m load_tests); every
    option after the command goes to it, e.g. `load-test --scenario mixed
    --target haproxy --users 50 --run-time 60s`.  Exit 1 when a gate breaks."""
    if state.stack:
        err.print("automata-lb: load-test drives an edge (the lab or a URL), not a stack")
        raise typer.Exit(USAGE)
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "load_tests", *ctx.args], cwd=ROOT)
    raise typer.Exit(proc.returncode)


@app.command("history")
def show_history(
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="How many of the newest records.", callback=bounded(1))] = 10,
) -> None:
    """What this tool changed on the target, newest last."""
    name = f"stack-{state.stack}" if state.stack else resolve().name
    entries = history.entries(name)[-limit:]
    if as_json:
        emit_json(entries)
        raise typer.Exit(OK)
    rows = []
    for e in entries:
        details = {k: v for k, v in e.items() if k not in ("time", "target", "command", "before", "after", "outcome")}
        rows.append((f"{datetime.fromtimestamp(e['time']):%m-%d %H:%M:%S}", e["command"], e.get("outcome", ""),
                     json.dumps(details, default=str)))
    columns = (Column("when"), Column("command"), Column("outcome"), Column("details", wrap=True))
    show(out, table(f"History ({name})", columns, rows, out))


def run() -> None:
    app()


if __name__ == "__main__":
    run()
