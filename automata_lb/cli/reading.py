"""The commands that read the tier: status, health-check, metrics, history, load-test."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

from rich.console import Console, Group
from rich.live import Live
import typer

from .. import edge, health, history, instances
from ..output import Column, emit_json, number, show, table
from ..prom import Prometheus, PrometheusError, backend_figures
from ..targets import Target
from .base import FAILED, OK, ago, app, bounded, err, out, prometheus_window
from .kinds import resolve

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
    return f"{state} {lb['version'].split('-')[0]} · {lb['config_hash'][:8]} · {ago(lb['last_reload'])}"


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
        share = n["haproxy"].get("canary_share")
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
    target = resolve().edge("status")
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
    target = resolve().edge("health-check")
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
    target = resolve().edge("metrics")
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



@app.command("load-test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def load_test(ctx: typer.Context) -> None:
    """The Locust scenarios with their SLO gates (python -m load_tests); every
    option after the command goes to it, e.g. `load-test --scenario mixed
    --target haproxy --users 50 --run-time 60s`.  Exit 1 when a gate breaks."""
    raise typer.Exit(resolve().load_test(ctx.args))


@app.command("history")
def show_history(
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="How many of the newest records.", callback=bounded(1))] = 10,
) -> None:
    """What this tool changed on the target, newest last."""
    name = resolve().name
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


