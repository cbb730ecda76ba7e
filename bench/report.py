"""The printed table (the same one that goes into the issue notes)."""

from __future__ import annotations

from bench.capacity import CapacityResult
from bench.load import LoadSettings
from bench.run import Column


def format_table(columns: list[Column], settings: LoadSettings, meta: dict) -> str:
    s = meta["settings"]
    lines = [
        f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration_s:g}s keep-alive, "
        f"median of {s['repeats']} run(s); LB {'pinned to CPU 1, wrk+backend to CPU 0' if s['pinned'] else 'not pinned'}; "
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
