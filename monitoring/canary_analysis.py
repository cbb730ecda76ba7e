"""The canary analysis: thresholds as data (canary-analysis.yml), the PromQL
that measures them, and the verdict.

A window is judged on the backends' request metrics, canary track against
stable track (the `version` label both Prometheus setups attach):

- fewer than `min_requests` canary requests: **wait** (no verdict);
- a check over its limit: **fail**;
- otherwise: **pass**.

A check "vs stable" only counts above its floor and only when stable served
requests in the window (at 100% there is nothing to compare with, and the
absolute limit alone applies).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitoring.rules import CLIENT_ROUTES
from traffic import model as traffic_model
from traffic.model import PolicyError, duration_ms

DEFAULTS = Path(__file__).with_name("canary-analysis.yml")
REQUESTS = "automata_http_requests_total"
DURATION = "automata_http_request_duration_seconds_bucket"
# The lab scrapes every 5 s: a window needs two samples for rate() to say anything.
MIN_WINDOW_S = 10


class AnalysisError(ValueError):
    """A threshold is invalid; `key` is its dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"canary analysis: {key}: {problem}")


@dataclass(frozen=True)
class Limit:
    max: float
    max_vs_stable: float
    floor: float


@dataclass(frozen=True)
class Analysis:
    min_requests: int
    max_inconclusive: int
    check_every_s: float
    error_ratio: Limit
    latency_p99: Limit    # seconds

    def queries(self, window_s: float) -> dict[str, str]:
        w = f"{max(MIN_WINDOW_S, math.ceil(window_s))}s"
        out = {}
        for track in ("canary", "stable"):
            sel = f'{_routes()}, version="{track}"'
            out[f"{track}_requests"] = f"sum(increase({REQUESTS}{{{sel}}}[{w}]))"
            out[f"{track}_errors"] = f'sum(increase({REQUESTS}{{{sel}, status=~"5.."}}[{w}]))'
            out[f"{track}_p99"] = f"histogram_quantile(0.99, sum by (le) (rate({DURATION}{{{sel}}}[{w}])))"
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def from_dict(doc: dict) -> Analysis:
    """An Analysis back from as_dict() (a recorded rollout's thresholds)."""
    limits = {k: Limit(**doc[k]) for k in ("error_ratio", "latency_p99")}
    return Analysis(int(doc["min_requests"]), int(doc["max_inconclusive"]), float(doc["check_every_s"]), **limits)


@dataclass
class Check:
    name: str
    value: float | None
    limit: float
    ok: bool
    detail: str


@dataclass
class Result:
    verdict: str                 # pass | fail | wait
    window_s: float
    time: float
    canary_requests: float
    stable_requests: float
    checks: list[Check] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _routes() -> str:
    """Client routes of the classes that have a canary: stable is compared on
    the same traffic (a WebSocket class never goes to the canary)."""
    skipped = [p.rstrip("/") + ".*" for c in traffic_model.load().classes if not c.canary for p in c.paths]
    return CLIENT_ROUTES[:-1] + "".join(f"|{p}" for p in skipped) + '"'


# --- loading -------------------------------------------------------------------

_SCHEMA: dict[str, Any] = {
    "min_requests": "count", "max_inconclusive": "count", "check_every": "duration",
    "error_ratio": {"max": "ratio", "max_vs_stable": "factor", "floor": "ratio"},
    "latency_p99": {"max": "duration", "max_vs_stable": "factor", "floor": "duration"},
}


def _value(key: str, kind: str, value: Any) -> float:
    if kind == "duration":
        try:
            return duration_ms(key, value) / 1000
        except PolicyError as exc:
            raise AnalysisError(key, exc.problem) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnalysisError(key, f"must be a number, got {value!r}")
    if kind == "count" and (not isinstance(value, int) or value < 1):
        raise AnalysisError(key, f"must be a whole number >= 1, got {value!r}")
    if kind == "ratio" and not 0 <= value <= 1:
        raise AnalysisError(key, f"must be between 0 and 1, got {value!r}")
    if kind == "factor" and value < 1:
        raise AnalysisError(key, f"must be at least 1 (a multiple of stable's figure), got {value!r}")
    return float(value)


def _merge(base: dict, extra: Any, schema: dict, prefix: str = "") -> dict:
    if not isinstance(extra, dict):
        raise AnalysisError(prefix.rstrip(".") or "(analysis)", "must be a mapping")
    for key, value in extra.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise AnalysisError(name, f"unknown key; known: {', '.join(schema)}")
        if isinstance(schema[key], dict):
            base[key] = _merge(base.get(key, {}), value, schema[key], name + ".")
        else:
            _value(name, schema[key], value)
            base[key] = value
    return base


def _parse_set(item: str) -> dict:
    """'error_ratio.max=0.05' -> {'error_ratio': {'max': 0.05}} (values as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise AnalysisError(item, "give KEY=VALUE, e.g. error_ratio.max=0.05")
    doc: Any = yaml.safe_load(raw)
    for part in reversed(key.split(".")):
        doc = {part: doc}
    return doc


def load(path: Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> Analysis:
    """The defaults, then the file at `path`, then each KEY=VALUE."""
    doc = _merge({}, yaml.safe_load(DEFAULTS.read_text()), _SCHEMA)
    if path is not None:
        try:
            extra = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AnalysisError(str(path), f"cannot be read: {exc}") from None
        doc = _merge(doc, extra, _SCHEMA)
    for item in sets:
        doc = _merge(doc, _parse_set(item), _SCHEMA)
    missing = [k for k in _SCHEMA if k not in doc]
    if missing:
        raise AnalysisError(missing[0], "missing from the defaults")

    def limit(name: str) -> Limit:
        kinds = _SCHEMA[name]
        return Limit(**{k: _value(f"{name}.{k}", kinds[k], doc[name][k]) for k in kinds})

    return Analysis(min_requests=int(doc["min_requests"]), max_inconclusive=int(doc["max_inconclusive"]),
                    check_every_s=_value("check_every", "duration", doc["check_every"]),
                    error_ratio=limit("error_ratio"), latency_p99=limit("latency_p99"))


# --- verdict -------------------------------------------------------------------

def _check(name: str, canary: float | None, stable: float | None, limit: Limit, stable_served: bool,
           unit: str) -> list[Check]:
    fmt = (lambda v: f"{v * 1000:.0f} ms") if unit == "s" else (lambda v: f"{v:.2%}")
    if canary is None:
        return []
    checks = [Check(f"{name} <= max", canary, limit.max, canary <= limit.max,
                    f"canary {fmt(canary)}, limit {fmt(limit.max)}")]
    if stable_served and stable is not None and canary > limit.floor:
        ceiling = max(stable * limit.max_vs_stable, limit.floor)
        checks.append(Check(f"{name} <= {limit.max_vs_stable:g} x stable", canary, ceiling, canary <= ceiling,
                            f"canary {fmt(canary)}, stable {fmt(stable)}, limit {fmt(ceiling)}"))
    return checks


def judge(analysis: Analysis, figures: dict[str, float | None], window_s: float, now: float | None = None) -> Result:
    """The verdict on one window's figures (what `queries` measured)."""
    canary_n = figures.get("canary_requests") or 0.0
    stable_n = figures.get("stable_requests") or 0.0
    result = Result("wait", window_s, now if now is not None else time.time(), canary_n, stable_n)
    if canary_n < analysis.min_requests:
        result.reason = f"{canary_n:.0f} of {analysis.min_requests} canary requests in {window_s:.0f}s"
        return result

    def ratio(track: str) -> float | None:
        n = figures.get(f"{track}_requests") or 0.0
        # increase() extrapolates each series on its own: errors can come out a hair above requests.
        return min(1.0, (figures.get(f"{track}_errors") or 0.0) / n) if n else None

    stable_served = stable_n >= 1
    result.checks = (_check("error ratio", ratio("canary"), ratio("stable"), analysis.error_ratio, stable_served, "%")
                     + _check("p99 latency", figures.get("canary_p99"), figures.get("stable_p99"),
                              analysis.latency_p99, stable_served, "s"))
    failed = [c for c in result.checks if not c.ok]
    result.verdict = "fail" if failed else "pass"
    result.reason = "; ".join(f"{c.name}: {c.detail}" for c in (failed or result.checks))
    return result


def measure(prom, analysis: Analysis, window_s: float) -> dict[str, float | None]:
    """Run the window's queries on a Prometheus (automata_lb.prom client)."""
    figures: dict[str, float | None] = {}
    for name, expr in analysis.queries(window_s).items():
        rows = prom.query(expr)
        value = float(rows[0]["value"][1]) if rows else None
        figures[name] = None if value is None or math.isnan(value) else value
    return figures


def evaluate(prom, analysis: Analysis, window_s: float) -> Result:
    return judge(analysis, measure(prom, analysis, window_s), window_s)

