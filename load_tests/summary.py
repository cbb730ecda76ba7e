"""A run's summary: what users felt per traffic class, where requests went,
what the load generator itself cost, and the gates' verdict, as data and as
the table printed at the end of a run."""

from __future__ import annotations

from collections import Counter

from load_tests.gates import GateResult

# A 429 is reported as its own Locust entry, named after the request with
# this suffix: it stays out of the failures and out of the latency of the
# answered requests, and the gates decide whether it counts.
RATE_LIMITED = " [429]"


def traffic_class(name: str) -> str:
    """The class a Locust entry belongs to (gates.TRAFFIC_CLASSES)."""
    base = name.removesuffix(RATE_LIMITED)
    if base.startswith("/ws"):
        return "ws_message" if base.endswith(" message") else "ws_connect"
    if base.startswith("/ai/"):
        return "ai_first_byte" if base.endswith(" first byte") else "ai_total"
    if base.startswith("/auth/"):
        return "auth"
    if base.startswith("/api/"):
        return "api"
    return "other"


def class_stats(stats) -> dict[str, dict]:
    """Per traffic class from Locust's RequestStats: requests (429s apart),
    failures, 429s and p50/p95/p99/max in ms, over every entry of the class."""
    from locust.stats import StatsEntry  # only where Locust runs: its import patches the process

    merged: dict[str, StatsEntry] = {}
    limited: Counter = Counter()
    for entry in stats.entries.values():
        cls = traffic_class(entry.name)
        if entry.name.endswith(RATE_LIMITED):
            limited[cls] += entry.num_requests
            continue
        merged.setdefault(cls, StatsEntry(stats, cls, ""))
        merged[cls].extend(entry)
    out = {}
    for cls in sorted(set(merged) | set(limited)):
        e = merged.get(cls)
        n = e.num_requests if e else 0
        out[cls] = {
            "requests": n,
            "failures": e.num_failures if e else 0,
            "rate_limited": limited[cls],
            "p50": e.get_response_time_percentile(0.50) if n else 0,
            "p95": e.get_response_time_percentile(0.95) if n else 0,
            "p99": e.get_response_time_percentile(0.99) if n else 0,
            "max": round(e.max_response_time) if n else 0,
        }
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = lambda row: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                                 for i, (v, w) in enumerate(zip(row, widths, strict=True)))
    return [fmt(header), *(fmt(r) for r in rows)]


def format_summary(summary: dict, gate_results: list[GateResult] | None) -> str:
    """The table a person reads at the end of a run (also summary.txt)."""
    s = summary
    targets = ", ".join(f"{t['name']} ({t['url']})" if t["name"] != t["url"] else t["url"] for t in s["targets"])
    lines = [f"scenario {s['scenario']}  target {targets}  peak users {s['peak_users']}  "
             f"duration {s['duration_s']:.1f} s",
             f"requests {s['requests']} ({s['rps']:.1f}/s, {s['rps_per_user']:.3f}/s per user)  "
             f"failures {s['failures']}  429s {s['rate_limited']} (counted apart)", ""]
    rows = [[cls, c["requests"], c["failures"], c["rate_limited"], c["p50"], c["p95"], c["p99"], c["max"]]
            for cls, c in s["classes"].items()]
    lines += _table(["class", "requests", "failed", "429", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    instances = sorted({i for per in s["instances"].values() for i in per})
    if instances:
        lines += ["", "answers per backend instance (X-Backend-Instance)"]
        rows = []
        for cls, per in s["instances"].items():
            total = sum(per.values())
            rows.append([cls, *(f"{per.get(i, 0)} ({per.get(i, 0) / total:.0%})" for i in instances)])
        lines += _table(["class", *instances], rows)
    if len(s["targets"]) > 1:
        lines += ["", "per target"]
        lines += _table(["target", "requests", "failed", "429"],
                        [[t, v["requests"], v["failures"], v["rate_limited"]] for t, v in s["per_target"].items()])
    g = s["generator"]
    lines += ["", f"load generator: {g['cpu_mean_pct']:.0f} % of one core on average, {g['cpu_max_pct']:.0f} % "
                  f"at most (Locust runs on one core: near 90 % it, not the tier, is the limit); "
                  f"machine {g['machine_cpu_mean_pct']:.0f} % busy on average ({g['cpus']} cores)"]
    if s["failure_examples"]:
        lines += ["", "failures (most frequent first)"]
        lines += [f"  {n:>6}  {err}" for err, n in s["failure_examples"]]
    if gate_results is not None:
        lines += ["", f"gates [{s['scenario']}]"]
        lines += _table(["gate", "limit", "measured", "result"],
                        [[r.gate, r.limit, r.measured, "ok" if r.ok else "BROKEN"] for r in gate_results])
        broken = [r.gate for r in gate_results if not r.ok]
        lines += ["", "RESULT: PASS" if not broken else f"RESULT: FAIL ({len(broken)} broken: {', '.join(broken)})"]
    return "\n".join(lines)
