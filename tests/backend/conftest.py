"""Fixtures for the reference backend tests: in-process apps for endpoint
checks, and the real process (python -m automata_backend) on free loopback
ports for WebSockets and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

# Starlette 1.x prefers the httpx2 fork for its TestClient; httpx (pinned for
# the rest of the suite) still works, so one client library is enough here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from automata_backend.app import create_admin_app, create_app
from automata_backend.state import Backend, Settings
from tests.kit import free_port, wait_until

BACKEND_DIR = Path(__file__).resolve().parents[2] / "backend"


@pytest.fixture
def backend() -> Backend:
    return Backend(Settings("backend-1", "stable"))


@pytest.fixture
def open_client():
    """open_client(asgi_app) -> a started TestClient, closed after the test."""
    opened: list[TestClient] = []

    def open_(app) -> TestClient:
        opened.append(TestClient(app).__enter__())
        return opened[-1]

    yield open_
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def client(backend, open_client) -> TestClient:
    return open_client(create_app(backend))


@pytest.fixture
def admin(backend, open_client) -> TestClient:
    return open_client(create_admin_app(backend))


_ENV = {**os.environ, "PYTHONPATH": str(BACKEND_DIR)}


def _command(instance: str, port: int, admin_port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "automata_backend", "--instance", instance, "--version", "stable",
            "--port", str(port), "--admin-port", str(admin_port), *args]


@pytest.fixture
def run_backend():
    """run_backend(port, admin_port, env={...}) runs the process to completion
    (for startup failures); `env` adds variables such as AUTOMATA_POOL_SIZE."""

    def run(port: int, admin_port: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(_command("backend-1", port, admin_port), env={**_ENV, **(env or {})},
                              capture_output=True, text=True, timeout=10)

    return run


@dataclass
class Process:
    proc: subprocess.Popen
    url: str
    admin_url: str
    ws_url: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def terminate(self) -> float:
        """Send SIGTERM and return the monotonic time it was sent."""
        self.proc.send_signal(signal.SIGTERM)
        return time.monotonic()


@pytest.fixture(scope="module")
def start_backend(tmp_path_factory):
    """start_backend("--grace-period", "5") runs the real process and waits until
    it is live; every process still running is killed when the module ends.
    `env` adds environment variables; `port` reuses a port (a restart)."""
    tmp_path = tmp_path_factory.mktemp("backend")
    started: list[Process] = []

    def start(*args: str, instance: str = "backend-1", env: dict[str, str] | None = None,
              port: int | None = None) -> Process:
        port, admin_port = port or free_port(), free_port()
        log = tmp_path / f"{instance}-{port}-{len(started)}.log"
        proc = subprocess.Popen(_command(instance, port, admin_port, *args), env={**_ENV, **(env or {})},
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        p = Process(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}",
                    f"ws://127.0.0.1:{port}/ws", log)
        started.append(p)
        def live_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return httpx.get(f"{p.url}/healthz", timeout=1).status_code == 200 and \
                    httpx.get(f"{p.admin_url}/fault", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(live_or_exited, 10, interval=0.05)
        except AssertionError:
            pytest.fail(f"backend did not come up within 10 s:\n{p.output()}")
        if proc.poll() is not None:
            pytest.fail(f"backend exited ({proc.returncode}) instead of coming up:\n{p.output()}")
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
