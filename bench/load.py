"""Drive HTTP load with wrk and read back its summary."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPORT = Path(__file__).parent / "wrk_report.lua"


@dataclass(frozen=True)
class LoadSettings:
    threads: int
    connections: int
    duration_s: float
    timeout_s: float = 5.0


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_us: int
    p99_us: int
    # connect/read/write/timeout are socket errors; status counts non-2xx/3xx.
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(url: str, settings: LoadSettings, cpus: str | None = None) -> WrkResult:
    """One keep-alive wrk run against url; raises if wrk itself fails."""
    argv = (["taskset", "-c", cpus] if cpus else []) + [
        "wrk", f"-t{settings.threads}", f"-c{settings.connections}",
        f"-d{settings.duration_s:g}s", f"--timeout={settings.timeout_s:g}s",
        "-s", str(REPORT), url,
    ]
    run = subprocess.run(argv, capture_output=True, text=True,
                         timeout=settings.duration_s + settings.timeout_s + 30)
    for line in run.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return WrkResult(requests=data["requests"], duration_s=data["duration_us"] / 1e6,
                             p50_us=data["p50_us"], p99_us=data["p99_us"], errors=data["errors"])
    raise RuntimeError(f"wrk printed no summary (exit {run.returncode}): {run.stderr or run.stdout}")
