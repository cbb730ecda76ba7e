"""The load-balancer dashboard as code (Grafana's own typed builder).

`python -m monitoring build` writes monitoring/load-balancer-dashboard.json;
`python -m monitoring check` fails when the committed file differs from what
this module builds.  Every query is PromQL over the metric names the edge
exporters, HAProxy and the backend publish; the lab test runs each one on a
real Prometheus, so a renamed metric or label breaks the build, not the
dashboard.

The datasource is a dashboard variable, never a fixed UID, so the JSON
imports into any Grafana with a Prometheus datasource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from traffic import haproxy
from traffic import model as traffic_model

from .rules import CLIENT_ROUTES

UID = "automata-load-balancer"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# HAProxy names a class's backends after it, its canary pool <class>_canary
# (traffic/haproxy.py): the classes with a canary track come from the policy.
_CANARY = [c.name for c in traffic_model.load().classes if c.canary]
CANARY_POOLS = "|".join(f"{c}{haproxy.CANARY_SUFFIX}" for c in _CANARY)
CANARY_CLASSES = "|".join(f"{c}(?:{haproxy.CANARY_SUFFIX})?" for c in _CANARY)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


# Panels that cannot have data where their series' source does not run, and
# why.  The lab test runs their queries too (they must parse) and accepts an
# empty answer only for these; tests/monitoring feeds them synthetic series.
EMPTY_ON_LAB = {
    "Autoscaling status": "kube-state-metrics (HPA status) runs only in a Kubernetes cluster",
}


def _query(q: Query, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto")
            .ref_id(ref).datasource(DATASOURCE))


def _with_queries(panel, queries: list[Query]):
    for i, q in enumerate(queries):
        panel = panel.with_target(_query(q, chr(ord("A") + i)))
    return panel


def _timeseries(title: str, description: str, unit: str, queries: list[Query],
                width: int = 12, stack: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(8).span(width).fill_opacity(10 if not stack else 40))
    return _with_queries(panel, queries)


def _ratio(metric: str, errors: str, by: str, base: str = "") -> str:
    selected = ", ".join(filter(None, (base, errors)))
    return (f"sum by ({by}) (rate({metric}{{{selected}}}[{RATE}]))"
            f" / sum by ({by}) (rate({metric}{{{base}}}[{RATE}]))")


def _quantile(q: str, metric: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{selector}[{RATE}])))"


def _traffic_panels() -> list:
    return [
        _timeseries(
            "Request rate by backend instance", "Requests/s each backend answered (probes excluded).",
            "reqps", [Query(f"sum by (instance, version) (rate(automata_http_requests_total{{{CLIENT_ROUTES}}}[{RATE}]))",
                            "{{instance}} ({{version}})")]),
        _with_queries(
            heatmap.Panel().title("Response time distribution")
            .description("Edge (NGINX) request durations of every class, as a heatmap.")
            .datasource(DATASOURCE).height(8).span(12).unit("s").calculate(False),
            [Query(f"sum by (le) (rate(nginx_log_request_duration_seconds_bucket[{RATE}]))", "{{le}}")]),
        _timeseries(
            "Latency percentiles by class (edge)", "p50, p95 and p99 at NGINX per traffic class.", "s",
            [Query(_quantile(q, "nginx_log_request_duration_seconds", "class"), f"{{{{class}}}} p{q[2:]}")
             for q in ("0.50", "0.95", "0.99")]),
        _timeseries(
            "Error rate (5xx share) by tier", "Share of responses that are 5xx at HAProxy, NGINX and the backends.",
            "percentunit", [
                Query(_ratio("haproxy_backend_http_responses_total", 'code="5xx"', "instance, proxy"),
                      "haproxy {{instance}} {{proxy}}"),
                Query(_ratio("nginx_log_requests_total", 'status=~"5.."', "instance, class"),
                      "nginx {{instance}} {{class}}"),
                Query(_ratio("automata_http_requests_total", 'status=~"5.."', "instance", CLIENT_ROUTES),
                      "backend {{instance}}"),
            ]),
        _timeseries(
            "Rate-limited requests (429) by class", "Requests refused by the per-client limits.", "reqps", [
                Query(f'sum by (class) (rate(nginx_log_requests_total{{status="429"}}[{RATE}]))', "nginx {{class}}"),
                Query(f'sum by (instance) (rate(haproxy_frontend_requests_denied_total{{proxy!="stats"}}[{RATE}]))',
                      "haproxy {{instance}}"),
            ]),
        _timeseries(
            "Canary share", "Share of client requests answered by each backend version.", "percentunit", [
                Query(f"sum by (version) (rate(automata_http_requests_total{{{CLIENT_ROUTES}}}[{RATE}]))"
                      f" / ignoring (version) group_left sum(rate(automata_http_requests_total{{{CLIENT_ROUTES}}}[{RATE}]))",
                      "{{version}}"),
                Query(f'sum by (instance) (rate(haproxy_backend_http_responses_total{{proxy=~"{CANARY_POOLS}"}}[{RATE}]))'
                      f' / sum by (instance) (rate(haproxy_backend_http_responses_total{{proxy=~"{CANARY_CLASSES}"}}[{RATE}]))',
                      "haproxy {{instance}} canary"),
            ]),
    ]


def _edge_panels() -> list:
    server_state = (table.Panel().title("HAProxy server state and weight")
                    .description("Every server of every HAProxy backend: UP, DOWN, DRAIN, MAINT, NOLB, and its weight.")
                    .datasource(DATASOURCE).height(8).span(12))
    server_state = _with_queries(server_state, [
        Query("max by (instance, proxy, server, state) (haproxy_server_status == 1)", "{{state}}"),
        Query("max by (instance, proxy, server) (haproxy_server_weight)", "weight"),
    ])
    return [
        server_state,
        _timeseries("NGINX connections", "Connections NGINX holds, by state.", "short", [
            Query("nginx_connections_active", "{{instance}} active"),
            Query("nginx_connections_reading", "{{instance}} reading"),
            Query("nginx_connections_writing", "{{instance}} writing"),
            Query("nginx_connections_waiting", "{{instance}} idle keep-alive"),
        ]),
        _timeseries("Connection saturation", "Share of the configured connection capacity in use.",
                    "percentunit", [
                        Query("haproxy_process_current_connections / haproxy_process_max_connections",
                              "haproxy {{instance}}"),
                        Query("nginx_connections_active / on (instance) group_left edge_nginx_max_connections",
                              "nginx {{instance}}"),
                    ]),
        _timeseries("Edge CPU", "CPU busy share per edge node.", "percentunit", [
            Query(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))', "{{instance}}"),
        ]),
        _timeseries("Edge file descriptors", "Descriptors allocated on each edge node, against its maximum.",
                    "short", [
                        Query("node_filefd_allocated", "{{instance}} allocated"),
                        Query("haproxy_process_max_fds", "{{instance}} haproxy limit"),
                    ]),
        _timeseries("Edge requests by upstream", "Responses NGINX got from each backend server.", "reqps", [
            Query(f"sum by (instance, upstream) (rate(nginx_log_upstream_responses_total[{RATE}]))",
                  "{{instance}} → {{upstream}}"),
        ]),
    ]


def _backend_panels() -> list:
    return [
        _timeseries("Connection pool status", "Database pool connections checked out and idle; "
                    "requests in flight against the instance's limit.", "short", [
                        Query("automata_db_connections_active", "{{instance}} pool active"),
                        Query("automata_db_connections_idle", "{{instance}} pool idle"),
                        Query("automata_active_connections", "{{instance}} in flight"),
                        Query("automata_max_connections", "{{instance}} limit"),
                    ]),
        _timeseries("Circuit breakers", "Backend breakers open (1), and HAProxy servers taken out by "
                    "health checks or the layer-7 breaker.", "short", [
                        Query("automata_circuit_breaker_open", "{{instance}} backend breaker"),
                        Query('sum by (instance, proxy) (haproxy_server_status{state="DOWN"})',
                              "haproxy {{instance}} {{proxy}} servers down"),
                    ]),
        _timeseries("WebSocket connections", "Open WebSockets per backend instance.", "short", [
            Query("automata_websocket_connections", "{{instance}}"),
        ]),
        _timeseries("Backend latency percentiles", "p99 per backend instance (client routes).", "s", [
            Query(_quantile("0.99", "automata_http_request_duration_seconds", "instance", f"{{{CLIENT_ROUTES}}}"),
                  "{{instance}} p99"),
        ]),
    ]


def _autoscaling_panels() -> list:
    panel = (stat.Panel().title("Autoscaling status")
             .description("Current, desired and maximum replicas of each HorizontalPodAutoscaler.")
             .datasource(DATASOURCE).height(6).span(24))
    return [_with_queries(panel, [
        Query("kube_horizontalpodautoscaler_status_current_replicas", "{{horizontalpodautoscaler}} current"),
        Query("kube_horizontalpodautoscaler_status_desired_replicas", "{{horizontalpodautoscaler}} desired"),
        Query("kube_horizontalpodautoscaler_spec_max_replicas", "{{horizontalpodautoscaler}} max"),
    ])]


def _resource_panels() -> list:
    return [
        _timeseries("Resource utilisation: CPU", "CPU seconds per second of the backend processes and "
                    "the edge nodes.", "short", [
                        Query(f'rate(process_cpu_seconds_total{{job="backend"}}[{RATE}])', "backend {{instance}}"),
                        Query(f'sum by (instance) (rate(node_cpu_seconds_total{{mode!="idle"}}[{RATE}]))',
                              "edge {{instance}}"),
                    ]),
        _timeseries("Resource utilisation: memory", "Resident memory of the backends; memory in use on "
                    "the edge nodes.", "bytes", [
                        Query('process_resident_memory_bytes{job="backend"}', "backend {{instance}}"),
                        Query("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", "edge {{instance}}"),
                    ]),
    ]


ROWS = {
    "Traffic": _traffic_panels,
    "Edge load balancers": _edge_panels,
    "Backends": _backend_panels,
    "Autoscaling": _autoscaling_panels,
    "Resources": _resource_panels,
}


def build() -> dict:
    """The dashboard as the JSON object Grafana imports."""
    dash = (db.Dashboard("Automata load balancing").uid(UID)
            .description("Edge (NGINX, HAProxy), backends and autoscaling of the Automata platform.")
            .tags(["automata", "load-balancing"]).refresh("30s").time("now-1h", "now")
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for title, panels in ROWS.items():
        dash = dash.with_row(db.Row(title))
        for panel in panels():
            dash = dash.with_panel(panel)
    return json.loads(json.dumps(dash.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of a built dashboard."""
    return [(p.get("title", ""), t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
