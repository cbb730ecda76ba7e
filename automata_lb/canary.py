"""Progressive canary: shift the canary's weight in steps, judge each step
on Prometheus (monitoring/canary_analysis.py), promote or roll back.

The rollout is a record on disk, kept with its target (rollout.json,
targets.record_file),
written at every transition, so a rollout that is interrupted (Ctrl-C, a
killed terminal, a lost SSH session) leaves a state `canary-status` can
explain and `canary-deploy --resume` or `canary-abort` can finish.  Every
action is a desired state, safe to run twice: resuming repeats the phase it
was in.

    deploying     the canary instances start the new release (weight 0)
    stepping      weight = steps[step]; analyses every check_every
    paused        too many analyses without enough canary traffic
    promoting     stable instances take the release (drain, replace), then weight 0
    rolling-back  weight 0 at once, then the canary instances go back
    promoted | rolled-back    finished

One rollout per target at a time: the running process holds an exclusive
lock on <target>.lock (released by the kernel if the process dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from monitoring.canary_analysis import Analysis, Result, evaluate

from .prom import PrometheusError
from .targets import TargetError, record_file
from .wait import until

RUNNING = ("deploying", "stepping", "promoting", "rolling-back")
FINISHED = ("promoted", "rolled-back")
Say = Callable[[str], None]


class Busy(RuntimeError):
    """Another process runs a rollout on this target."""


class Tier(Protocol):
    """What a rollout acts on (the lab's load balancers and instances)."""

    def set_weight(self, weight: int) -> dict: ...
    def deploy(self, release: str) -> None: ...
    def promote(self, release: str) -> None: ...
    def restore_canary(self, releases: dict[str, str]) -> None: ...
    def weights(self) -> dict[str, dict[str, int | None]]: ...


@dataclass
class Rollout:
    target: str
    release: str
    steps: list[int]
    interval_s: float
    analysis: dict
    canary_releases_before: dict[str, str]
    phase: str = "deploying"
    step: int = 0
    weight: int = 0
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    step_started: float | None = None
    inconclusive: int = 0
    pid: int | None = None
    reason: str = ""
    last_analysis: dict | None = None
    events: list[dict] = field(default_factory=list)

    def event(self, what: str, **details) -> None:
        self.events.append({"time": time.time(), "what": what, "phase": self.phase, "weight": self.weight,
                            **details})


def path(target: str) -> Path:
    return record_file(target, "rollout", "json")


def _lock_path(target: str) -> Path:
    return record_file(target, "rollout", "lock")


def load(target: str) -> Rollout | None:
    p = path(target)
    return Rollout(**json.loads(p.read_text())) if p.exists() else None


def save(rollout: Rollout) -> None:
    rollout.updated = time.time()
    p = path(rollout.target)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rollout), indent=2, default=str) + "\n")
    tmp.replace(p)  # a reader never sees half a record


def holder(target: str) -> int | None:
    """The pid of the process running a rollout on `target`, if one does."""
    lock_path = _lock_path(target)
    if not lock_path.exists():
        return None
    with lock_path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


@contextmanager
def lock(target: str) -> Iterator[None]:
    lock_path = _lock_path(target)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise Busy(f"a rollout on {target} runs in process {f.read().strip() or '?'}") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM (what canary-abort sends a running rollout) stops it like Ctrl-C."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(rollout: Rollout | None, running_pid: int | None) -> str:
    """One sentence on where a rollout stands, for people."""
    if rollout is None:
        return "no rollout on record"
    at = f"step {rollout.step + 1} of {len(rollout.steps)} ({rollout.weight}%)"
    if rollout.phase in FINISHED:
        return f"{rollout.release}: {rollout.phase} ({rollout.reason})" if rollout.reason else \
            f"{rollout.release}: {rollout.phase}"
    if rollout.phase == "paused":
        return f"{rollout.release}: paused at {at}: {rollout.reason}; `canary-deploy --resume` or `canary-abort`"
    if running_pid:
        return f"{rollout.release}: {rollout.phase}, {at}, in process {running_pid}"
    gone = f"process {rollout.pid} is gone" if rollout.pid else "its process is gone"
    return (f"{rollout.release}: interrupted while {rollout.phase} at {at} ({gone}); "
            "the weights stay as they are until `canary-deploy --resume` or `canary-abort`")


class Runner:
    """Drives one rollout to its end, saving it at every transition."""

    def __init__(self, rollout: Rollout, tier: Tier, analysis: Analysis, prom, say: Say,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.r, self.tier, self.analysis, self.prom, self.say = rollout, tier, analysis, prom, say
        self.clock, self.sleep = clock, sleep

    def _phase(self, phase: str, **details) -> None:
        self.r.phase = phase
        self.r.event(phase, **details)
        save(self.r)

    def _weight(self, weight: int) -> None:
        self.tier.set_weight(weight)
        self.r.weight = weight
        self.r.step_started = time.time()
        self.r.event("weight", step=self.r.step)
        save(self.r)
        self.say(f"canary weight {weight}% on every load balancer")

    def run(self) -> str:
        """Go on from the recorded phase; returns the final phase."""
        self.r.pid = os.getpid()
        save(self.r)
        if self.r.phase == "deploying":
            self.say(f"deploying {self.r.release} on the canary track (weight 0 first)")
            self.tier.set_weight(0)
            self.r.weight = 0
            self.tier.deploy(self.r.release)
            self._phase("stepping")
            self._weight(self.r.steps[self.r.step])
        elif self.r.phase in ("stepping", "paused"):
            self._phase("stepping", resumed=True)
            self._weight(self.r.steps[self.r.step])   # the tiers may have been changed meanwhile
        while self.r.phase == "stepping":
            self._step()
        if self.r.phase == "promoting":
            self._promote()
        elif self.r.phase == "rolling-back":
            self._rollback()
        return self.r.phase

    def _step(self) -> None:
        step_began = self.clock() - (time.time() - (self.r.step_started or time.time()))
        while True:
            self.sleep(self.analysis.check_every_s)
            elapsed = self.clock() - step_began
            result = self._analyse(elapsed)
            if result.verdict == "fail":
                self.r.reason = f"analysis failed at {self.r.weight}%: {result.reason}"
                self.say(f"[red]rollback[/]: {self.r.reason}")
                self._phase("rolling-back", analysis=result.as_dict())
                return
            if elapsed < self.r.interval_s:
                continue
            if result.verdict == "wait":
                self.r.inconclusive += 1
                if self.r.inconclusive >= self.analysis.max_inconclusive:
                    self.r.reason = f"no verdict after {self.r.inconclusive} analyses: {result.reason}"
                    self._phase("paused")
                    self.say(f"paused: {self.r.reason}")
                    return
                save(self.r)
                continue
            self.r.inconclusive = 0
            self.r.event("passed", step=self.r.step, analysis=result.as_dict())
            self.say(f"step {self.r.step + 1} ({self.r.weight}%) passed: {result.reason}")
            if self.r.step + 1 >= len(self.r.steps):
                self._phase("promoting")
                return
            self.r.step += 1
            self._weight(self.r.steps[self.r.step])
            return

    def _analyse(self, elapsed: float) -> Result:
        try:
            result = evaluate(self.prom, self.analysis, elapsed)
        except PrometheusError as exc:  # Prometheus away: no verdict, never a promotion
            result = Result("wait", elapsed, time.time(), 0, 0, reason=f"Prometheus: {exc}")
        self.r.last_analysis = result.as_dict()
        save(self.r)
        return result

    def _promote(self) -> None:
        self.say(f"promoting {self.r.release}: stable instances take it (drain, replace, health, enable)")
        self.tier.promote(self.r.release)
        self.tier.set_weight(0)
        self.r.weight = 0
        self.r.event("weight", step=self.r.step)
        self.r.reason = f"healthy at every step ({', '.join(f'{s}%' for s in self.r.steps)})"
        self._phase("promoted")
        self.say(f"[green]promoted[/] {self.r.release}; the canary track takes no traffic")

    def _rollback(self) -> None:
        self.tier.set_weight(0)
        self.r.weight = 0
        self.r.event("weight", step=self.r.step)
        save(self.r)
        self.say("canary weight 0% on every load balancer; putting the canary instances back")
        self.tier.restore_canary(self.r.canary_releases_before)
        self._phase("rolled-back")
        self.say(f"[yellow]rolled back[/] {self.r.release}: {self.r.reason}")


def abort(target: str, say: Say, wait_s: float = 60) -> int | None:
    """Stop a rollout running in another process (SIGTERM) and wait for its
    lock; returns the pid that was stopped."""
    pid = holder(target)
    if not pid or pid < 0:
        return None
    say(f"stopping the rollout in process {pid}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    until(lambda: not holder(target), wait_s, f"process {pid} letting go of the rollout", interval=0.2,
          error=TargetError)
    return pid
