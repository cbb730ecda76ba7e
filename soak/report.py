"""The soak's report: soak.json (every figure), timeline.png (faults as
bands over request rate, failures and p99 per load balancer, memory and
descriptors per process) and index.html, which shows both."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only, no display
import matplotlib.pyplot as plt


BUCKET_S = 10   # the timeline's resolution: Locust's per-second counts are too noisy to read


def per_bucket(rows: list[list[int]]) -> list[tuple[float, float, float]]:
    """[second, requests, failures, ...] rows as (bucket middle, requests/s, failures/s) per BUCKET_S."""
    sums: dict[int, list[int]] = {}
    for second, requests, failures, *_ in rows:
        total = sums.setdefault(second // BUCKET_S * BUCKET_S, [0, 0])
        total[0] += requests
        total[1] += failures
    return [(b + BUCKET_S / 2, r / BUCKET_S, f / BUCKET_S) for b, (r, f) in sorted(sums.items())]


def timeline_png(doc: dict, path: Path) -> None:
    start = doc["started"]

    def minutes(t: float) -> float:
        return (t - start) / 60

    fig, axes = plt.subplots(5, 1, figsize=(13, 15), sharex=True)
    panels = ("requests/s", "failed requests/s", "p99 ms (api, auth)", "resident MB", "open descriptors")
    # Every panel per BUCKET_S seconds; memory and descriptors every sample.
    for ax, title in zip(axes, panels, strict=True):
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        for f in doc["faults"]:
            ax.axvspan(minutes(f["started"]), minutes(f["recovered"] or f["window_end"]), color="tab:red", alpha=0.12)
    for f in doc["faults"]:
        axes[0].annotate(f["fault"], (minutes(f["started"]), 1.0), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", fontsize=7)
    load = doc["load"]
    for target, rows in sorted(load["target_timeline"].items()):
        buckets = per_bucket(rows)
        axes[0].plot([minutes(t) for t, _, _ in buckets], [r for _, r, _ in buckets], lw=0.9, label=target)
        axes[1].plot([minutes(t) for t, _, _ in buckets], [f for _, _, f in buckets], lw=0.9, label=target)
    for target, rows in sorted(load["target_p99_ms"].items()):
        axes[2].plot([minutes(r[0] + BUCKET_S / 2) for r in rows], [r[1] for r in rows], lw=0.9, label=target)
    for group, samples in sorted(doc["resources"]["samples"].items()):
        axes[3].plot([minutes(s[0]) for s in samples], [s[1] / 2**20 for s in samples], lw=0.8, label=group)
        axes[4].plot([minutes(s[0]) for s in samples], [s[2] for s in samples], lw=0.8, label=group)
    for ax in (axes[0], axes[3]):
        ax.legend(fontsize=7, ncol=3, loc="upper right")
    axes[-1].set_xlabel("minutes since the load started (red: a fault, from its start to its recovery)")
    fig.suptitle(f"soak {doc['run_id']}: {doc['verdict']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fired(alert: dict) -> str:
    after = alert["fired_after_s"]
    return "NOT fired" if after is None else f"fired after {after} s (by {alert['deadline_s']} s)"


def fault_rows(doc: dict) -> list[list[str]]:
    rows = []
    for f in doc["faults"]:
        alerts = "; ".join(f"{name} {_fired(a)}, {'cleared' if a['cleared'] else 'NOT cleared'}"
                           for name, a in f["alerts"].items())
        rows.append([f["fault"], f"{f['requests']}", f"{f['failures']}", f"{f['bound']}",
                     f"{f['excluded_failures']} ({', '.join(f['excluded'])})" if f["excluded"] else "-",
                     f"{f['recovered'] - f['recovering']:.1f}" if f["recovered"] else "-",
                     alerts or "-", "ok" if f["ok"] else "BROKEN"])
    return rows


FAULT_HEADER = ["fault", "requests", "failed", "bound", "failed on what it took down", "recovery s", "alerts",
                "result"]
LEAK_HEADER = ["process", "life sampled s", "MB first", "MB last", "MB/h", "bound", "fds first", "fds last", "fds/h",
               "bound", "result"]


def leak_rows(doc: dict) -> list[list[str]]:
    return [[g, t["span_s"], t["rss_mb_first"], t["rss_mb_last"], t["rss_mb_per_hour"], t["bound_rss_mb_per_hour"],
             t["fds_first"], t["fds_last"], t["fds_per_hour"], t["bound_fds_per_hour"],
             ("ok" if t["ok"] else "LEAKS") if t["judged"] else f"not judged ({t['not_judged']})"]
            for g, t in doc["resources"]["trends"].items()]


def text(doc: dict) -> str:
    def table(header: list[str], rows: list[list]) -> list[str]:
        rows = [[str(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines = [f"soak {doc['run_id']}: seed {doc['seed']}, {doc['duration_s'] / 60:.1f} min, "
             f"{doc['load']['requests']} requests through {len(doc['load']['targets'])} endpoints", ""]
    lines += [*table(FAULT_HEADER, fault_rows(doc)), ""]
    for f in doc["faults"]:
        lines.append(f"  {f['fault']}: {f['detail']}")
        lines += [f"    failed: {e}" for e in f["failure_examples"]]
    lines += ["", *table(LEAK_HEADER, leak_rows(doc)), ""]
    if doc["unexpected_alerts"]:
        lines.append("alerts outside the faults that expect them: "
                     + ", ".join(f"{n} ({k} samples)" for n, k in doc["unexpected_alerts"].items()))
    lines += [f"websockets closed with 1001: {doc['load']['ws_going_away']}", f"SOAK: {doc['verdict']}"]
    return "\n".join(lines)


def write(doc: dict, out: Path) -> str:
    (out / "soak.json").write_text(json.dumps(doc, indent=1))
    timeline_png(doc, out / "timeline.png")
    summary = text(doc)
    (out / "soak.txt").write_text(summary + "\n")
    png = base64.b64encode((out / "timeline.png").read_bytes()).decode()
    (out / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>soak {html.escape(doc['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}</style></head>
<body><h1>soak {html.escape(doc['run_id'])}: {html.escape(doc['verdict'])}</h1>
<p>seed {doc['seed']}, {doc['duration_s'] / 60:.1f} minutes, {doc['load']['requests']} requests through
{html.escape(', '.join(t['name'] for t in doc['load']['targets']))}; the data: <a href="soak.json">soak.json</a></p>
<h2>Faults</h2>{_table(FAULT_HEADER, fault_rows(doc))}
<h2>Timeline</h2><img alt="timeline" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Processes</h2>{_table(LEAK_HEADER, leak_rows(doc))}
<pre>{html.escape(summary)}</pre></body></html>
""")
    return summary
