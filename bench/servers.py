"""Throwaway NGINX/HAProxy processes and their CPU accounting.

Every server runs in the foreground in its own session (process group), so
stopping it - or cleaning up after Ctrl-C - kills the master and all of its
workers at once and nothing outlives the benchmark.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def fill_template(name: str, dest: Path, **values: int | str) -> Path:
    """Copy bench/configs/<name> to dest, replacing each @KEY@ by its value.

    @KEY@ rather than $key or {key}: NGINX configs are full of both.
    """
    text = (CONFIGS / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"{name}: placeholder {leftover[0]} has no value")
    dest.write_text(text)
    return dest


def nginx_argv(conf: Path) -> list[str]:
    # -p: relative paths (pid, logs) land in the config's temp dir.
    # daemon off: stay the child of this process so the group can be killed.
    return ["nginx", "-p", f"{conf.parent}/", "-c", str(conf), "-g", "daemon off;"]


def haproxy_argv(conf: Path) -> list[str]:
    # -db: foreground, whatever `daemon` the config says.
    return ["haproxy", "-db", "-f", str(conf)]


def process_tree(root: int) -> list[int]:
    """root and all its descendants (NGINX workers, HAProxy master-worker children)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat(int(entry.name))[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we were looking
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of the given processes, all threads included, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return total


def reaped_ticks(pid: int) -> int:
    """cutime + cstime: the CPU of the children `pid` has reaped (NGINX's
    workers retired by a reload), which cpu_ticks of the live tree misses."""
    fields = _stat(pid)
    return int(fields[13]) + int(fields[14])  # stat fields 16 and 17


def ticks_to_us(ticks: int) -> float:
    return ticks * 1_000_000 / CLK_TCK


class Server:
    """One foreground server process; a context manager that always cleans up."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, cpus: str | None = None):
        self.name, self.port, self.workdir = name, port, workdir
        # taskset execs the server, so the pid we get is the server's own.
        self.argv = (["taskset", "-c", cpus] if cpus else []) + argv
        self.log = workdir / f"{name}.out"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} "
                                   f"({' '.join(self.argv)}):\n{self.log.read_text()[-2000:]}")
            if _listening(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def pids(self) -> list[int]:
        assert self.proc is not None, f"{self.name} is not running"
        return process_tree(self.proc.pid)

    def cpu_ticks(self) -> int:
        return cpu_ticks(self.pids())

    def stop(self) -> None:
        """Stop the whole process tree; raise if any of it survives."""
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = self.pids()
        # SIGTERM is the fast shutdown for both NGINX and HAProxy; the whole
        # group gets it so no worker is orphaned if the master dies first.
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while (alive := [pid for pid in tree if _alive(pid)]) and time.monotonic() < deadline:
            _signal_group(self.proc.pid, signal.SIGKILL)
            time.sleep(0.05)
        if alive:
            raise RuntimeError(f"{self.name}: processes {alive} survived SIGKILL")


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting to be reaped."""
    try:
        return _stat(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
