"""Measure one column: warm up, then repeated wrk runs with CPU accounting."""

from __future__ import annotations

import http.client
import statistics
from dataclasses import asdict, dataclass, field, replace

from bench.load import LoadSettings, run_wrk
from bench.servers import Server, ticks_to_us


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_us: int
    p99_us: int
    requests: int
    errors: dict[str, int]
    lb_ticks: int | None  # None for the direct column: there is no LB
    backend_ticks: int

    @property
    def lb_us_per_req(self) -> float | None:
        return None if self.lb_ticks is None else ticks_to_us(self.lb_ticks) / max(self.requests, 1)

    @property
    def backend_us_per_req(self) -> float:
        return ticks_to_us(self.backend_ticks) / max(self.requests, 1)


@dataclass
class Column:
    name: str
    note: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None  # why the column could not be measured

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        if not values or values[0] is None:
            return None
        return statistics.median(values)

    @property
    def errors(self) -> int:
        return sum(sum(s.errors.values()) for s in self.samples)

    def to_json(self) -> dict:
        medians = {a: self.median(a) for a in
                   ("rps", "p50_us", "p99_us", "lb_us_per_req", "lb_ticks", "backend_us_per_req")}
        return {"name": self.name, "note": self.note, "skipped": self.skipped, "median": medians,
                "errors": self.errors,
                "samples": [asdict(s) | {"lb_us_per_req": s.lb_us_per_req,
                                         "backend_us_per_req": s.backend_us_per_req} for s in self.samples]}


def probe(port: int, path: str = "/") -> None:
    """Fail early, naming the port, if the target does not answer 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "bench.local"})
        status = conn.getresponse().status
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"127.0.0.1:{port}{path} answered {status}, not 200: check the column's config")


def measure(url: str, settings: LoadSettings, *, repeats: int, warmup_s: float,
            backend: Server, lb: Server | None, cpus: str | None) -> list[Sample]:
    """repeats wrk runs; each counts the CPU ticks LB and backend spent during it."""
    # The warm-up fills upstream keep-alive pools and lets health checks settle.
    if warmup_s > 0:
        run_wrk(url, replace(settings, duration_s=warmup_s), cpus)
    samples = []
    for _ in range(repeats):
        lb_before = lb.cpu_ticks() if lb else None
        backend_before = backend.cpu_ticks()
        result = run_wrk(url, settings, cpus)
        samples.append(Sample(
            rps=result.rps, p50_us=result.p50_us, p99_us=result.p99_us,
            requests=result.requests, errors=result.errors,
            lb_ticks=lb.cpu_ticks() - lb_before if lb else None,
            backend_ticks=backend.cpu_ticks() - backend_before))
    return samples
