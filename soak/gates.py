"""The soak's gates (gates.toml), read and checked before any load starts:
an unknown key or a bad duration is refused naming it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from automata_lb.prom import duration_seconds

DEFAULT = Path(__file__).with_name("gates.toml")
# The programs the soak watches (resources.py), which may have leak bounds of their own.
PROGRAMS = {"nginx", "haproxy", "keepalived", "backend", "prometheus"}


class GateError(ValueError):
    """A gate file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class FaultGate:
    hold_s: float
    alerts: tuple[str, ...]
    latency_ms: int = 0


@dataclass(frozen=True)
class LeakBound:
    rss_mb_per_hour: float
    fds_per_hour: float


@dataclass(frozen=True)
class Gates:
    recovery_s: float
    alert_scrapes: int
    alert_clear_s: float
    leak_min_duration_s: float
    leak: LeakBound                       # every program's, unless it has its own
    leak_by_program: dict[str, LeakBound]
    faults: dict[str, FaultGate]

    def leak_bound(self, program: str) -> LeakBound:
        return self.leak_by_program.get(program, self.leak)


def _table(doc: dict, key: str, where: str, known: set[str]) -> dict:
    table = doc.get(key)
    if not isinstance(table, dict):
        raise GateError(f"{where}: [{key}] is missing or not a table")
    unknown = set(table) - known
    if unknown:
        raise GateError(f"{where}: [{key}] {sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(known))})")
    return table


def _seconds(table: dict, key: str, where: str) -> float:
    try:
        return duration_seconds(str(table[key]))
    except (KeyError, ValueError) as exc:
        raise GateError(f"{where}: {key}: {exc}") from None


def _number(table: dict, key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise GateError(f"{where}: {key}: must be a number of at least 0, got {value!r}")
    return float(value)


def load(path: Path = DEFAULT, known_faults: set[str] | None = None) -> Gates:
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GateError(f"{where}: {exc}") from None
    unknown = set(doc) - {"run", "leak", "faults"}
    if unknown:
        raise GateError(f"{where}: [{sorted(unknown)[0]}]: unknown table (known: run, leak, faults)")
    run = _table(doc, "run", where, {"recovery", "alert_scrapes", "alert_clear"})
    leak = _table(doc, "leak", where, {"min_duration", "rss_mb_per_hour", "fds_per_hour", *PROGRAMS})
    default = LeakBound(_number(leak, "rss_mb_per_hour", f"{where}: [leak]"),
                        _number(leak, "fds_per_hour", f"{where}: [leak]"))
    by_program = {}
    for program in PROGRAMS & set(leak):
        own = _table(leak, program, f"{where}: [leak]", {"rss_mb_per_hour", "fds_per_hour"})
        at = f"{where}: [leak.{program}]"
        by_program[program] = LeakBound(_number(own, "rss_mb_per_hour", at) if "rss_mb_per_hour" in own
                                        else default.rss_mb_per_hour,
                                        _number(own, "fds_per_hour", at) if "fds_per_hour" in own
                                        else default.fds_per_hour)
    faults = {}
    for name, table in (doc.get("faults") or {}).items():
        at = f"{where}: [faults.{name}]"
        if known_faults is not None and name not in known_faults:
            raise GateError(f"{at}: no such fault (known: {', '.join(sorted(known_faults))})")
        unknown = set(table) - {"hold", "alerts", "latency_ms"}
        if unknown:
            raise GateError(f"{at} {sorted(unknown)[0]}: unknown key (known: alerts, hold, latency_ms)")
        alerts = table.get("alerts", [])
        if not isinstance(alerts, list) or not all(isinstance(a, str) for a in alerts):
            raise GateError(f"{at} alerts: must be a list of alert names")
        faults[name] = FaultGate(_seconds(table, "hold", at), tuple(alerts), int(table.get("latency_ms", 0)))
    if known_faults is not None and (missing := known_faults - set(faults)):
        raise GateError(f"{where}: no [faults.{sorted(missing)[0]}] table")
    return Gates(_seconds(run, "recovery", f"{where}: [run]"), int(_number(run, "alert_scrapes", f"{where}: [run]")),
                 _seconds(run, "alert_clear", f"{where}: [run]"), _seconds(leak, "min_duration", f"{where}: [leak]"),
                 default, by_program, faults)
