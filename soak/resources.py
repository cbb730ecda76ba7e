"""Resident memory and open descriptors of every process that serves or
watches the traffic, sampled from this machine's /proc (the lab's
containers run here), grouped per container and program.

A group's series is split where its processes were replaced (a killed
backend's new process, a restarted Prometheus): a leak is a slope within
one process's life, not the step between two lives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

from lab.podman import podman

# The programs watched in each kind of container; anything else there
# (systemd, sshd, the exporters) is not the tier's.
PROGRAMS = {"edge": ("nginx", "haproxy", "keepalived"), "backend": ("python3", "python"),
            "prometheus": ("prometheus",)}


@dataclass
class Series:
    """One group's samples: [time, rss_bytes, fds, generation]."""
    group: str
    program: str                      # nginx, haproxy, keepalived, backend, prometheus
    samples: list[list[float]] = field(default_factory=list)

    def longest_life(self) -> list[list[float]]:
        lives: dict[float, list[list[float]]] = {}
        for s in self.samples:
            lives.setdefault(s[3], []).append(s)
        return max(lives.values(), key=lambda life: life[-1][0] - life[0][0], default=[])


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


class Sampler:
    """Samples every `interval` seconds in a thread until stopped."""

    def __init__(self, containers: dict[str, str], interval: float = 5.0) -> None:
        self.containers = containers          # container name -> kind (edge, backend, prometheus)
        self.interval = interval
        self.series: dict[str, Series] = {}
        self._pids: dict[str, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _root(self, container: str) -> psutil.Process | None:
        root = self._pids.get(container)
        if root is not None and root.is_running():
            return root
        pid = podman("inspect", "-f", "{{.State.Pid}}", container, check=False).stdout.strip()
        if not pid.isdigit() or pid == "0":
            return None
        try:
            self._pids[container] = psutil.Process(int(pid))
        except psutil.NoSuchProcess:
            return None
        return self._pids[container]

    def sample(self) -> None:
        now = time.time()
        for container, kind in self.containers.items():
            root = self._root(container)
            if root is None:
                continue   # stopped: no sample, and its next life is a new generation
            totals: dict[str, list[float]] = {}
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in processes:
                try:
                    name = p.name()
                    if name not in PROGRAMS[kind]:
                        continue
                    program = "backend" if kind == "backend" else name
                    with p.oneshot():
                        total = totals.setdefault(program, [0.0, 0.0, 0.0])
                        total[0] += p.memory_info().rss
                        total[1] += p.num_fds()
                        # The oldest process of the group names its life.
                        total[2] = p.create_time() if not total[2] else min(total[2], p.create_time())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            short = container.removeprefix("automata-lab-")
            for program, (rss, fds, born) in totals.items():
                group = short if program in ("backend", "prometheus") else f"{short}/{program}"
                self.series.setdefault(group, Series(group, program)).samples.append([now, rss, fds, born])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 -- a sampling hiccup must not end the soak
                print(f"soak: resource sampling: {exc}", flush=True)
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def trends(self) -> dict[str, dict]:
        """Per group: the slope of resident MB and of descriptors per hour
        over its longest life, and how long that life was sampled."""
        found = {}
        for group, series in sorted(self.series.items()):
            life = series.longest_life()
            span = life[-1][0] - life[0][0] if life else 0.0
            found[group] = {
                "program": series.program, "span_s": round(span, 1), "samples": len(life),
                "rss_mb_first": round(life[0][1] / 2**20, 1) if life else None,
                "rss_mb_last": round(life[-1][1] / 2**20, 1) if life else None,
                "fds_first": int(life[0][2]) if life else None, "fds_last": int(life[-1][2]) if life else None,
                "rss_mb_per_hour": _round(slope_per_hour([(s[0], s[1] / 2**20) for s in life])),
                "fds_per_hour": _round(slope_per_hour([(s[0], s[2]) for s in life])),
            }
        return found


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
