"""SLO gates as data: load them from gates.toml, refuse bad ones by name,
and judge a run's summary against them.

A gate file has one table per scenario:

    [mixed]
    max_failure_ratio = 0.001        # failed requests / all requests
    min_rps_per_user = 0.3           # requests/s per simulated user
    rate_limited_is_failure = false  # does a 429 count as a failure?
    min_rate_limited_ratio = 0.0     # at least this share must be 429 (a limit that must be met)
    [mixed.latency_ms]               # ceilings per traffic class, milliseconds
    api = {p95 = 150, p99 = 400}

docs/load-tests.md explains each gate and the values chosen.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_GATES = Path(__file__).with_name("gates.toml")

# Scenario -> the Locust user classes it runs (their weights set the mix);
# "drill" is the mixed load under the fault drill.
SCENARIOS = {
    "api": ("ApiUser",),
    "websocket": ("WebSocketUser",),
    "ai": ("AiUser",),
    "auth": ("AuthUser",),
    "mixed": ("ApiUser", "WebSocketUser", "AiUser", "AuthUser"),
}
GATED = (*SCENARIOS, "drill")

# The traffic classes a latency ceiling can name: every Locust entry belongs
# to one of them (see traffic_class in hooks.py).
TRAFFIC_CLASSES = ("api", "auth", "ws_connect", "ws_message", "ai_first_byte", "ai_total")
PERCENTILES = ("p50", "p95", "p99")
SCENARIO_KEYS = {"max_failure_ratio", "min_rps_per_user", "rate_limited_is_failure",
                 "min_rate_limited_ratio", "latency_ms"}


class GateError(ValueError):
    """A gate file that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class Ceiling:
    traffic_class: str
    percentile: str   # p50 | p95 | p99
    ms: float


@dataclass(frozen=True)
class ScenarioGates:
    scenario: str
    max_failure_ratio: float
    min_rps_per_user: float = 0.0
    rate_limited_is_failure: bool = False
    min_rate_limited_ratio: float = 0.0
    ceilings: tuple[Ceiling, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GateResult:
    gate: str          # e.g. "max_failure_ratio", "api p99"
    limit: str         # for people: "0.10 %", "400 ms"
    measured: str
    ok: bool

    def as_dict(self) -> dict:
        return {"gate": self.gate, "limit": self.limit, "measured": self.measured, "ok": self.ok}


def _number(where: str, value, *, low: float = 0.0, high: float = math.inf) -> float:
    # bool is an int in Python; `true` is never a sensible threshold.
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high \
            or math.isnan(value):
        bound = f"between {low:g} and {high:g}" if high != math.inf else f"a number >= {low:g}"
        raise GateError(f"{where}: must be {bound}, got {value!r}")
    return float(value)


def parse(data: dict, source: str = "gates") -> dict[str, ScenarioGates]:
    """Validate the whole file before anything runs; every error names its key."""
    gates = {}
    for scenario, table in data.items():
        where = f"{source}: [{scenario}]"
        if scenario not in GATED:
            raise GateError(f"{where}: unknown scenario (known: {', '.join(GATED)})")
        if not isinstance(table, dict):
            raise GateError(f"{where}: must be a table of gates, got {table!r}")
        unknown = set(table) - SCENARIO_KEYS
        if unknown:
            raise GateError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                            f"(known: {', '.join(sorted(SCENARIO_KEYS))})")
        if "max_failure_ratio" not in table:
            raise GateError(f"{where}: max_failure_ratio is required")
        flag = table.get("rate_limited_is_failure", False)
        if not isinstance(flag, bool):
            raise GateError(f"{source}: {scenario}.rate_limited_is_failure: must be true or false, got {flag!r}")
        latency = table.get("latency_ms", {})
        if not isinstance(latency, dict):
            raise GateError(f"{source}: {scenario}.latency_ms: must be a table of traffic classes")
        ceilings = []
        for cls, limits in latency.items():
            key = f"{scenario}.latency_ms.{cls}"
            if cls not in TRAFFIC_CLASSES:
                raise GateError(f"{source}: {key}: unknown traffic class (known: {', '.join(TRAFFIC_CLASSES)})")
            if not isinstance(limits, dict) or not limits:
                raise GateError(f"{source}: {key}: must be a table like {{p95 = 150, p99 = 400}}")
            for pct, ms in limits.items():
                if pct not in PERCENTILES:
                    raise GateError(f"{source}: {key}.{pct}: unknown percentile (known: {', '.join(PERCENTILES)})")
                ceilings.append(Ceiling(cls, pct, _number(f"{source}: {key}.{pct}", ms, low=1)))
        gates[scenario] = ScenarioGates(
            scenario=scenario,
            max_failure_ratio=_number(f"{source}: {scenario}.max_failure_ratio", table["max_failure_ratio"], high=1),
            min_rps_per_user=_number(f"{source}: {scenario}.min_rps_per_user", table.get("min_rps_per_user", 0)),
            rate_limited_is_failure=flag,
            min_rate_limited_ratio=_number(f"{source}: {scenario}.min_rate_limited_ratio",
                                           table.get("min_rate_limited_ratio", 0), high=1),
            ceilings=tuple(ceilings),
        )
    return gates


def load(path: Path | str = DEFAULT_GATES) -> dict[str, ScenarioGates]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GateError(f"--gates {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"--gates {path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path))


def for_scenario(all_gates: dict[str, ScenarioGates], scenario: str, source: str = "gates") -> ScenarioGates:
    if scenario not in all_gates:
        raise GateError(f"--scenario {scenario}: {source} has no [{scenario}] table "
                        f"(has: {', '.join(sorted(all_gates)) or 'none'})")
    return all_gates[scenario]


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f} %"


def failures_counted(summary: dict, gates: ScenarioGates) -> int:
    return summary["failures"] + (summary["rate_limited"] if gates.rate_limited_is_failure else 0)


def evaluate(summary: dict, gates: ScenarioGates) -> list[GateResult]:
    """Judge a run summary (hooks.build_summary) against one scenario's gates."""
    results = []
    total = summary["requests"]
    failed = failures_counted(summary, gates)
    ratio = failed / total if total else 1.0
    what = "failed (429s included)" if gates.rate_limited_is_failure else "failed (429s apart)"
    results.append(GateResult("max_failure_ratio", _pct(gates.max_failure_ratio),
                              f"{_pct(ratio)} ({failed} of {total} {what})",
                              total > 0 and ratio <= gates.max_failure_ratio))
    if gates.min_rps_per_user:
        per_user = summary["rps_per_user"]
        results.append(GateResult("min_rps_per_user", f"{gates.min_rps_per_user:g}/s",
                                  f"{per_user:.3f}/s ({summary['rps']:.1f}/s in all)",
                                  per_user >= gates.min_rps_per_user))
    if gates.min_rate_limited_ratio:
        limited = summary["rate_limited"] / total if total else 0.0
        results.append(GateResult("min_rate_limited_ratio", _pct(gates.min_rate_limited_ratio),
                                  f"{_pct(limited)} ({summary['rate_limited']} answered 429)",
                                  limited >= gates.min_rate_limited_ratio))
    for c in gates.ceilings:
        stats = summary["classes"].get(c.traffic_class)
        if not stats or not stats["requests"]:
            # A ceiling on a class that sent nothing cannot be met by silence.
            results.append(GateResult(f"{c.traffic_class} {c.percentile}", f"{c.ms:g} ms", "no requests", False))
            continue
        value = stats[c.percentile]
        results.append(GateResult(f"{c.traffic_class} {c.percentile}", f"{c.ms:g} ms", f"{value:g} ms",
                                  value <= c.ms))
    return results
