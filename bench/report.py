"""The printed table (the one docs/benchmarks.md quotes)."""

from __future__ import annotations

import statistics

from bench.capacity import CapacityResult
from bench.load import LoadSettings
from bench.run import Column


# Each "ours" column, and the Lua balancer, against the minimal config of the
# same load balancer.
PAIRS = {"nginx-ours": "nginx-minimal", "nginx-lua": "nginx-minimal", "haproxy-ours": "haproxy-minimal"}


def ratio_spreads(columns: list[Column]) -> dict[str, dict]:
    """Per pair: the ratio of LB CPU per request (ours / minimal) of each
    round, its mean, and its spread: the 95% interval of the mean relative to
    it (1.96 x standard error / mean; 1.0 until there are two rounds)."""
    by_name = {c.name: c for c in columns if not c.skipped}
    out = {}
    for ours, minimal in PAIRS.items():
        if ours not in by_name or minimal not in by_name:
            continue
        ratios = [a.lb_us_per_req / b.lb_us_per_req
                  for a, b in zip(by_name[ours].samples, by_name[minimal].samples, strict=False)]
        if not ratios:
            continue
        mean = statistics.fmean(ratios)
        spread = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5 / mean if len(ratios) > 1 else 1.0
        out[ours] = {"against": minimal, "ratios": [round(r, 4) for r in ratios], "mean": mean, "spread": spread}
    return out


def format_ratios(columns: list[Column], rounds: list[dict]) -> str:
    spreads = ratio_spreads(columns)
    if not spreads:
        return ""
    lines = ["", f"Ratios of LB CPU per request, ours / minimal, over {len(rounds)} interleaved round(s):"]
    for name, r in spreads.items():
        lines.append(f"  {name} / {r['against']}: {r['mean']:.3f} ± {100 * r['spread']:.1f}% "
                     f"(95% interval of the mean; rounds: {', '.join(f'{x:.3f}' for x in r['ratios'])})")
    return "\n".join(lines)


def format_table(columns: list[Column], settings: LoadSettings, meta: dict) -> str:
    s = meta["settings"]
    lines = [
        f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration_s:g}s keep-alive, "
        f"median of {len(columns[0].samples) if columns else 0} interleaved round(s); "
        f"LB {'pinned to CPU 1, wrk+backend to CPU 0' if s['pinned'] else 'not pinned'}; "
        f"load average before/after: {meta['loadavg_before'][0]:.2f}/{meta['loadavg_after'][0]:.2f}",
        *([f"role variables overridden with --set: {s['role_overrides']}"] if s["role_overrides"] else []),
        "",
        f"{'target':<16} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'LB CPU µs/req':>14} {'(ticks)':>8} "
        f"{'backend µs/req':>15} {'errors':>7}",
    ]
    for c in columns:
        if c.skipped:
            lines.append(f"{c.name:<16} not measured: {c.skipped}")
            continue
        lb = c.median("lb_us_per_req")
        ticks = c.median("lb_ticks")
        lines.append(
            f"{c.name:<16} {c.median('rps'):>9,.0f} {c.median('p50_us') / 1000:>7.2f} "
            f"{c.median('p99_us') / 1000:>7.2f} {'-' if lb is None else f'{lb:.1f}':>14} "
            f"{'' if ticks is None else f'({ticks:.0f})':>8} {c.median('backend_us_per_req'):>15.1f} {c.errors:>7}")
    lines.append("")
    lines.extend(f"  {c.name}: {c.note}" for c in columns)
    if any(c.errors for c in columns if not c.skipped):
        lines.append("  WARNING: a column had errors; its CPU/request counts the (cheaper) error responses too.")
    return "\n".join(lines)


def format_capacity(capacities: dict[str, list[CapacityResult]]) -> str:
    if not capacities:
        return ""
    lines = ["", "Idle keep-alive connections held at once (one source IP each, every connection used twice):"]
    for name, results in capacities.items():
        best = max((r.target for r in results if r.ok), default=0)
        lines.append(f"  {name}: max held with zero errors: {best:,}")
        for r in results:
            if r.ok:
                lines.append(f"    {r.target:>6,}: all held ({r.seconds:.0f}s)")
            else:
                errors = ", ".join(f"{k}: {v}" for k, v in r.errors.most_common(3))
                lines.append(f"    {r.target:>6,}: {r.answered:,} answered, {r.held:,} held to the end; {errors}")
    return "\n".join(lines)
