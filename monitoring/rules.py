"""The platform's alert rules: expressions here, thresholds in alerts.yml.

One source, rendered twice: `rule_groups()` is both the lab Prometheus's rule
file and the `spec` of the cluster's PrometheusRule.  Thresholds are data:
an expression names them as ${name}, their kinds are declared next to it,
and every value (the defaults, a stack's overrides) is checked against the
kind before anything is rendered, with an error that names the key.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

ALERTS_FILE = Path(__file__).with_name("alerts.yml")
# Every alert links its section of docs/runbooks.md.  Alertmanager, Grafana
# and the chat message show the link as it is, away from the repository, so
# it is absolute: the published document, one section per alert.  A fork or
# a mirror passes its own to rule_groups() (python -m monitoring rules
# --runbook-base-url URL).
RUNBOOK_BASE_URL = "https://github.com/automata-learning/automata-lb/blob/main/docs/runbooks.md"
SEVERITIES = ("critical", "warning", "info")
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ThresholdError(ValueError):
    """A threshold that is missing, unknown or of the wrong kind; names the key."""


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError("must be a number above 0 and at most 1")
    return float(value)


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("must be a number above 0")
    return float(value)


def _duration(value: Any) -> str:
    if not isinstance(value, str) or not DURATION.match(value):
        raise ValueError("must be a duration with a unit, like 30s, 5m or 1h")
    return value


def _classes(value: Any) -> str:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and CLASS_NAME.match(v) for v in value)):
        raise ValueError("must be a non-empty list of traffic class names, like [api, auth]")
    return "|".join(value)


def _severity(value: Any) -> str:
    if value not in SEVERITIES:
        raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
    return value


KINDS = {"ratio": _ratio, "positive": _positive, "duration": _duration, "classes": _classes}


@dataclass(frozen=True)
class Alert:
    summary: str
    description: str
    expr: str  # a string.Template over the thresholds in `params`
    params: dict[str, str] = field(default_factory=dict)  # threshold name -> kind

    def render_expr(self, values: dict[str, Any]) -> str:
        return Template(self.expr).substitute({k: values[k] for k in self.params})


def _ratio_expr(metric: str, errors: str, by: str, base: str = "") -> str:
    """Share of `metric` matching `errors`, per `by`, above ${ratio} at a rate above ${min_rate}."""
    total = f"sum by ({by}) (rate({metric}{{{base}}}[${{window}}]))"
    failed = f"sum by ({by}) (rate({metric}{{{', '.join(filter(None, (base, errors)))}}}[${{window}}]))"
    return f"({failed} / {total} > ${{ratio}}) and {total} > ${{min_rate}}"


# Requests clients made: health probes and scrapes would dilute a backend's
# error share (and a failing probe is already BackendInstanceDown).
CLIENT_ROUTES = 'route!~"/health.*|/metrics.*"'
_RATIO_PARAMS = {"ratio": "ratio", "window": "duration", "min_rate": "positive"}


def _edge_latency(quantile: str) -> Alert:
    return Alert(
        summary=f"p{quantile[2:]} latency of {{{{ $labels.class }}}} on {{{{ $labels.instance }}}} is high",
        description=(f"NGINX on {{{{ $labels.instance }}}} answered {{{{ $labels.class }}}} requests with a "
                     f"p{quantile[2:]} of {{{{ $value | humanizeDuration }}}}."),
        expr=(f"histogram_quantile({quantile}, sum by (instance, class, le) "
              "(rate(nginx_log_request_duration_seconds_bucket{class=~\"${classes}\"}[${window}]))) > ${seconds}"),
        params={"seconds": "positive", "window": "duration", "classes": "classes"},
    )


ALERTS: dict[str, Alert] = {
    "EdgeNodeDown": Alert(
        summary="Edge node {{ $labels.instance }} does not answer scrapes",
        description="node-exporter on {{ $labels.instance }} has not answered; the node may be down.",
        expr='up{job="edge-node"} == 0'),
    "EdgeLoadBalancerDown": Alert(
        summary="A load balancer on {{ $labels.instance }} is down",
        description="NGINX (nginx_up) or HAProxy (its exporter) on {{ $labels.instance }} is not answering.",
        expr='nginx_up == 0 or up{job="haproxy"} == 0'),
    "EdgeVipHolders": Alert(
        summary="{{ $value }} edge nodes hold the floating addresses of {{ $labels.vrrp_instance }}",
        description=("Exactly one node should be VRRP master of {{ $labels.vrrp_instance }}: 0 means "
                     "clients of its addresses get no answer, 2 that the nodes cannot hear each other."),
        expr='sum by (vrrp_instance) (edge_vip_state{state="MASTER"}) != 1'),
    "BackendInstanceDown": Alert(
        summary="Backend {{ $labels.instance }} is down",
        description="Backend instance {{ $labels.instance }} has not answered its metrics scrape.",
        expr='up{job="backend"} == 0'),
    "HAProxyServerDown": Alert(
        summary="HAProxy on {{ $labels.instance }} marked {{ $labels.server }} down in {{ $labels.proxy }}",
        description=("A failed health check or the circuit breaker (observed layer-7 errors) took "
                     "{{ $labels.server }} out of {{ $labels.proxy }}."),
        expr='haproxy_server_status{state="DOWN"} == 1'),
    "BackendCircuitBreakerOpen": Alert(
        summary="Circuit breaker open on {{ $labels.instance }}",
        description="Backend {{ $labels.instance }} stopped calling a failing downstream service.",
        expr="automata_circuit_breaker_open == 1"),
    "HAProxyHigh5xxRatio": Alert(
        summary="HAProxy backend {{ $labels.proxy }} on {{ $labels.instance }} answers too many 5xx",
        description="{{ $value | humanizePercentage }} of {{ $labels.proxy }} responses are 5xx.",
        expr=_ratio_expr("haproxy_backend_http_responses_total", 'code="5xx"', "instance, proxy"),
        params=_RATIO_PARAMS),
    "NginxHigh5xxRatio": Alert(
        summary="NGINX on {{ $labels.instance }} answers too many 5xx for {{ $labels.class }}",
        description="{{ $value | humanizePercentage }} of {{ $labels.class }} responses are 5xx.",
        expr=_ratio_expr("nginx_log_requests_total", 'status=~"5.."', "instance, class"),
        params=_RATIO_PARAMS),
    "BackendHigh5xxRatio": Alert(
        summary="Backend {{ $labels.instance }} answers too many 5xx",
        description="{{ $value | humanizePercentage }} of the responses of {{ $labels.instance }} are 5xx.",
        expr=_ratio_expr("automata_http_requests_total", 'status=~"5.."', "instance", CLIENT_ROUTES),
        params=_RATIO_PARAMS),
    "EdgeHighLatencyP95": _edge_latency("0.95"),
    "EdgeHighLatencyP99": _edge_latency("0.99"),
    "RateLimitRejectionsSpiking": Alert(
        summary="Many requests refused by rate limits on {{ $labels.instance }}",
        description="{{ $value | humanize }} requests/s answered 429 (class: {{ $labels.class }}).",
        expr=('sum by (instance, class) (rate(nginx_log_requests_total{status="429"}[${window}])) > ${rate}'
              ' or label_replace(sum by (instance) (rate(haproxy_frontend_requests_denied_total'
              '{proxy!="stats"}[${window}])), "class", "all", "", "") > ${rate}'),
        params={"rate": "positive", "window": "duration"}),
    "ConnectionSaturation": Alert(
        summary="Connections on {{ $labels.instance }} near the configured capacity",
        description="{{ $value | humanizePercentage }} of the connection capacity is in use.",
        expr=("haproxy_process_current_connections / haproxy_process_max_connections > ${ratio}"
              " or nginx_connections_active / on (instance) group_left edge_nginx_max_connections > ${ratio}"),
        params={"ratio": "ratio"}),
    "HPAAtMaximum": Alert(
        summary="HPA {{ $labels.horizontalpodautoscaler }} is pinned at its maximum",
        description="{{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} cannot add replicas.",
        expr=("kube_horizontalpodautoscaler_status_current_replicas"
              " >= kube_horizontalpodautoscaler_spec_max_replicas")),
    "CertificateExpiringSoon": Alert(
        summary="Certificate {{ $labels.certificate }} on {{ $labels.instance }} expires soon",
        description="{{ $labels.certificate }} expires in {{ $value | humanizeDuration }}.",
        expr="edge_tls_certificate_not_after_seconds - time() < ${days} * 86400",
        params={"days": "positive"}),
    "PrometheusTargetMissing": Alert(
        summary="Prometheus cannot scrape {{ $labels.job }} on {{ $labels.instance }}",
        description="The target has been failing its scrapes; its metrics are missing.",
        expr="up == 0"),
}


def _check(alert: str, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check one alert's settings against its declaration; return them converted."""
    if not isinstance(values, dict):
        raise ThresholdError(f"{source}: {alert}: must be a mapping of thresholds")
    spec = ALERTS[alert]
    allowed = {"for", "severity", *spec.params}
    for key in values:
        if key not in allowed:
            raise ThresholdError(f"{source}: {alert}.{key}: unknown threshold; "
                                 f"{alert} takes {', '.join(sorted(allowed))}")
    checked = {}
    for key, value in values.items():
        kind = _severity if key == "severity" else _duration if key == "for" else KINDS[spec.params[key]]
        try:
            kind(value)
        except ValueError as exc:
            raise ThresholdError(f"{source}: {alert}.{key}: {value!r} {exc}") from None
        checked[key] = value
    return checked


def load(overrides: dict[str, Any] | None = None, *, source: str = "overrides",
         path: Path = ALERTS_FILE) -> dict[str, dict[str, Any]]:
    """The thresholds of alerts.yml with `overrides` merged in, all checked."""
    defaults = yaml.safe_load(path.read_text()) or {}
    thresholds: dict[str, dict[str, Any]] = {}
    for alert in ALERTS:
        if alert not in defaults:
            raise ThresholdError(f"{path.name}: {alert}: missing; every alert needs its thresholds")
        thresholds[alert] = _check(alert, defaults[alert], path.name)
        missing = {"for", "severity", *ALERTS[alert].params} - thresholds[alert].keys()
        if missing:
            raise ThresholdError(f"{path.name}: {alert}: missing {', '.join(sorted(missing))}")
    for alert in defaults:
        if alert not in ALERTS:
            raise ThresholdError(f"{path.name}: {alert}: no such alert")
    for alert, values in (overrides or {}).items():
        if alert not in ALERTS:
            raise ThresholdError(f"{source}: {alert}: no such alert; known alerts: {', '.join(ALERTS)}")
        thresholds[alert] = {**thresholds[alert], **_check(alert, values, source)}
    return thresholds


def runbook_base_url(value: Any) -> str:
    """`value` checked as the runbooks' base URL: absolute http(s), no anchor
    (each alert adds its own)."""
    parts = urllib.parse.urlsplit(value) if isinstance(value, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or " " in value:
        raise ValueError(f"runbook base URL: {value!r} must be an absolute http(s) URL without #anchor, "
                         f"like {RUNBOOK_BASE_URL}")
    return value


def runbook_anchor(alert: str) -> str:
    """The anchor of an alert's section (`## EdgeNodeDown` -> edgenodedown),
    as GitHub and most Markdown renderers make it."""
    return alert.lower()


def rule_groups(thresholds: dict[str, dict[str, Any]], *, runbook_base: str = RUNBOOK_BASE_URL) -> dict:
    """Prometheus rule groups (`groups:`) for the checked thresholds."""
    runbook_base = runbook_base_url(runbook_base)
    rules = []
    for name, alert in ALERTS.items():
        values = thresholds[name]
        rules.append({
            "alert": name,
            "expr": alert.render_expr({k: KINDS[kind](values[k]) if kind == "classes" else values[k]
                                       for k, kind in alert.params.items()}),
            "for": values["for"],
            "labels": {"severity": values["severity"]},
            "annotations": {
                "summary": alert.summary,
                "description": alert.description,
                "runbook_url": f"{runbook_base}#{runbook_anchor(name)}",
            },
        })
    return {"groups": [{"name": "automata-lb", "rules": rules}]}
