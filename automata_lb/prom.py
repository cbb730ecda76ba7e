"""A small Prometheus HTTP API client (instant and range queries)."""

from __future__ import annotations

import re

import httpx

from monitoring.rules import CLIENT_ROUTES


class PrometheusError(RuntimeError):
    pass


# Prometheus's own duration syntax (common/model's ParseDuration): units
# from the largest down, each at most once, e.g. 90s, 1h30m, 2d.
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_UNIT_S = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration_seconds(text: str) -> float:
    """A Prometheus duration (a range window) in seconds; ValueError if it is none, or zero."""
    match = _DURATION.fullmatch(text) if text else None
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_S, strict=True) if n) if match else 0
    if not seconds:
        raise ValueError(f"{text!r} is not a Prometheus duration above zero, such as 30s, 5m, 1h30m or 2d")
    return seconds


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/healthy", timeout=self.timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def _get(self, api: str, expr: str, **params: object) -> list[dict]:
        try:
            body = httpx.get(f"{self.url}/api/v1/{api}", params={"query": expr, **params}, timeout=self.timeout).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{expr}: {body.get('error')}")
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict]:
        return self._get("query", expr)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """Every series of `expr` from `start` to `end` (Unix seconds): {metric, values: [[t, "v"], ...]}."""
        return self._get("query_range", expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")

    def alert_holds(self) -> dict[str, float]:
        """Every alerting rule Prometheus runs, with its `for` in seconds."""
        try:
            body = httpx.get(f"{self.url}/api/v1/rules", params={"type": "alert"}, timeout=self.timeout).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from exc
        return {r["name"]: float(r.get("duration", 0)) for g in body["data"]["groups"] for r in g["rules"]}

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}


def backend_figures(prom: Prometheus, window: str = "1m") -> dict[str, dict[str, float]]:
    """Request rate, 5xx ratio and p99 per backend instance, over `window`."""
    rate = f"sum by (instance) (rate(automata_http_requests_total{{{CLIENT_ROUTES}}}[{window}]))"
    errors = f'sum by (instance) (rate(automata_http_requests_total{{{CLIENT_ROUTES}, status=~"5.."}}[{window}]))'
    p99 = (f"histogram_quantile(0.99, sum by (instance, le) "
           f"(rate(automata_http_request_duration_seconds_bucket{{{CLIENT_ROUTES}}}[{window}])))")
    rates, fails, tails = prom.by_label(rate, "instance"), prom.by_label(errors, "instance"), prom.by_label(p99, "instance")
    return {name: {"rps": r, "error_ratio": (fails.get(name, 0.0) / r) if r else 0.0, "p99_s": tails.get(name)}
            for name, r in rates.items()}
