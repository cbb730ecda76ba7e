"""What the soak's record says: each fault's window of requests and
failures, the alerts it fired and cleared, the processes' trends, and the
verdict of every gate."""

from __future__ import annotations

from collections import Counter

from automata_lb.prom import Prometheus, PrometheusError
from load_tests.drill import in_window

from .faults import Injection
from .gates import Gates


def windows(injections: list[Injection], summary: dict, load_end: float) -> None:
    """Count the load's requests and failures in each fault's window: from
    its start to the next fault's start (or the end of the load)."""
    for event, following in zip(injections, [*injections[1:], None], strict=True):
        event.window_end = following.started if following else load_end
        event.requests, _, window = in_window(summary, event.started, event.window_end)
        failed = [f for f in window if f[4] not in event.excluded]
        event.excluded_failures = len(window) - len(failed)
        event.failures = len(failed)
        event.failures_by_target = dict(Counter(target for *_, target in failed))
        event.failure_examples = [f"{target}: {name}: {error}" for _, _, name, error, target in failed[:8]]


def firing(prom: Prometheus, start: float, end: float, step: float) -> dict[str, list[float]]:
    """When each alert was firing between `start` and `end`: {name: [times]}."""
    found: dict[str, list[float]] = {}
    for series in prom.query_range('ALERTS{alertstate="firing"}', start, end, step):
        found.setdefault(series["metric"]["alertname"], []).extend(float(t) for t, _ in series["values"])
    return {name: sorted(set(times)) for name, times in found.items()}


def alerts(injections: list[Injection], fired: dict[str, list[float]], holds: dict[str, float], gates: Gates,
           scrape_s: float) -> None:
    """Each fault's alerts: fired within their `for` (as the running
    Prometheus has it) plus the allowed scrapes and one rule evaluation of
    the fault taking effect, and no longer firing `alert_clear` after its
    recovery."""
    for event in injections:
        for name in gates.faults[event.fault].alerts if event.fault in gates.faults else ():
            hold = holds[name]
            deadline = event.injected + hold + (gates.alert_scrapes + 1) * scrape_s
            times = fired.get(name, [])
            first = next((t for t in times if t >= event.injected), None)
            clear_by = event.recovered + gates.alert_clear_s
            still = [t for t in times if t >= clear_by and t < event.window_end]
            ok = first is not None and first <= deadline and first <= event.recovering + scrape_s and not still
            event.alerts[name] = {"for_s": hold, "fired_after_s": None if first is None else round(first - event.injected, 1),
                                  "deadline_s": round(deadline - event.injected, 1),
                                  "cleared": not still, "ok": ok}


def unexpected(fired: dict[str, list[float]], injections: list[Injection], gates: Gates) -> dict[str, int]:
    """Alerts that fired outside every fault that expects them: {name: samples}."""
    found = {}
    for name, times in fired.items():
        owners = [e for e in injections if e.fault in gates.faults and name in gates.faults[e.fault].alerts]
        stray = [t for t in times if not any(e.started <= t < e.window_end for e in owners)]
        if stray:
            found[name] = len(stray)
    return found


def leaks(trends: dict[str, dict], gates: Gates, duration_s: float) -> dict[str, dict]:
    """Each group's trend against the leak bounds, judged only on a run at
    least `min_duration` long (and a life that spans most of it)."""
    judged = {}
    for group, t in trends.items():
        long_enough = duration_s >= gates.leak_min_duration_s and t["span_s"] >= 0.5 * duration_s
        bound = gates.leak_bound(t["program"])
        rss, fds = t["rss_mb_per_hour"], t["fds_per_hour"]
        ok = (not long_enough) or ((rss is None or rss <= bound.rss_mb_per_hour)
                                   and (fds is None or fds <= bound.fds_per_hour))
        why = "" if long_enough else (
            f"run under {gates.leak_min_duration_s / 60:g} min" if duration_s < gates.leak_min_duration_s
            else f"its longest life {t['span_s'] / 60:.0f} min: the faults restart it")
        judged[group] = {**t, "judged": long_enough, "not_judged": why, "ok": ok,
                         "bound_rss_mb_per_hour": bound.rss_mb_per_hour, "bound_fds_per_hour": bound.fds_per_hour}
    return judged


def prometheus_range(prom: Prometheus, start: float, end: float, step: float) -> dict[str, list[float]]:
    try:
        return firing(prom, start, end, step)
    except PrometheusError as exc:
        raise RuntimeError(f"the alerts cannot be read: {exc}") from exc
