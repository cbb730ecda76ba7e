"""The real process (python -m automata_backend): WebSockets, streaming,
connection limits and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import time

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.kit import wait_until_async

GRACE = 5.0


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


@pytest.fixture(scope="module")
def shared(start_backend):
    """One process for the tests that leave it as they found it."""
    return start_backend()


def _peer_socket_option(pid: int, local: tuple[str, int], level: int, option: int) -> int:
    """getsockopt() on the server's end of our connection `local`, inside
    process `pid` (our child): pidfd_getfd() lends us its descriptor."""
    import ctypes

    import psutil
    fd = next(c.fd for c in psutil.Process(pid).net_connections("tcp") if c.raddr and tuple(c.raddr) == local)
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd (Linux 5.6)
        if copy < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as borrowed:
        return borrowed.getsockopt(level, option)


def test_keep_alive_responses_are_not_held_back_by_nagle(shared):
    # Balancers reuse upstream connections.  Without TCP_NODELAY on accepted
    # sockets every response after the first on a connection waited for the
    # peer's delayed ACK (~40 ms each): the accepted socket must carry it.
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=5)
    try:
        for _ in range(2):  # a reused keep-alive connection, each response read whole
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        nodelay = _peer_socket_option(shared.proc.pid, conn.sock.getsockname(), socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        conn.close()
    assert nodelay, "the accepted socket has Nagle on: keep-alive responses wait for delayed ACKs"


def test_websocket_says_hello_echoes_and_is_counted(shared):
    p = shared

    async def scenario():
        async with websockets.connect(p.ws_url) as ws:
            assert ws.response.headers["x-backend-instance"] == "backend-1"
            assert json.loads(await ws.recv()) == {"type": "hello", "instance": "backend-1", "version": "stable"}
            for text in ("one", "two"):
                await ws.send(text)
                assert json.loads(await ws.recv()) == {"type": "echo", "instance": "backend-1", "data": text}
            assert metric(p.url, "automata_websocket_connections") == 1
        assert metric(p.url, "automata_websocket_messages_total") == 2

    asyncio.run(scenario())
    assert metric(p.url, "automata_websocket_connections") == 0


def test_websocket_handshake_is_refused_with_the_injected_status(shared):
    p = shared

    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(p.ws_url):
                pass
        assert exc.value.response.status_code == 502
        assert exc.value.response.headers["x-backend-instance"] == "backend-1"

    httpx.put(f"{p.admin_url}/fault", json={"error_rate": 1.0, "error_status": 502}, timeout=5)
    try:
        asyncio.run(scenario())
    finally:
        httpx.delete(f"{p.admin_url}/fault", timeout=5)


def test_streamed_ai_response_sends_a_chunk_every_second(shared):
    p = shared
    arrivals = []
    started = time.monotonic()
    with httpx.stream("GET", f"{p.url}/ai/generate?seconds=1.5&stream=1", timeout=5) as r:
        assert r.headers["x-backend-instance"] == "backend-1"
        for line in r.iter_lines():
            arrivals.append((time.monotonic() - started, json.loads(line)))
    assert [body.get("chunk") for _, body in arrivals] == [1, 2, None]
    assert arrivals[-1][1]["done"] is True
    # Chunks arrive as they are produced (a second apart), not all at the end.
    assert arrivals[0][0] >= 0.9 and arrivals[-1][0] - arrivals[0][0] >= 0.4


def test_delayed_request_holds_a_db_connection(shared):
    p = shared

    async def scenario():
        async with httpx.AsyncClient(timeout=5) as c:
            slow = asyncio.ensure_future(c.get(f"{p.url}/api/report?delay=0.6"))

            async def checked_out():
                return await asyncio.to_thread(metric, p.url, "automata_db_connections_active") == 1

            await wait_until_async(checked_out, 5, interval=0.05)
            assert await asyncio.to_thread(metric, p.url, "automata_db_connections_idle") == 19
            assert (await slow).status_code == 200
        assert metric(p.url, "automata_db_connections_active") == 0

    asyncio.run(scenario())


def test_traffic_beyond_max_connections_gets_503(start_backend):
    p = start_backend("--max-connections", "1")

    async def scenario():
        async with websockets.connect(p.ws_url) as ws:  # takes the one connection
            await ws.recv()
            r = httpx.get(f"{p.url}/api/x", timeout=5)
            assert (r.status_code, r.json()["error"]) == (503, "instance at max_connections")
            assert httpx.get(f"{p.url}/health", timeout=5).status_code == 200  # probes are not traffic
        assert httpx.get(f"{p.url}/api/x", timeout=5).status_code == 200

    asyncio.run(scenario())


def test_sigterm_drains_in_flight_work_and_exits_zero(start_backend):
    p = start_backend("--grace-period", str(GRACE))

    async def scenario():
        async with httpx.AsyncClient(timeout=10) as c, websockets.connect(p.ws_url) as ws:
            await ws.recv()
            in_flight = asyncio.ensure_future(c.get(f"{p.url}/api/slow?delay=1"))

            async def request_started():
                perf = (await c.get(f"{p.url}/metrics/performance")).json()
                return perf["active_connections"] >= 3  # WebSocket + slow request + this one

            await wait_until_async(request_started, 5, interval=0.05)
            p.terminate()

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1001

            # A new request is refused or told the instance is not ready.
            try:
                async with httpx.AsyncClient(timeout=2) as fresh:
                    assert (await fresh.get(f"{p.url}/health")).status_code == 503
            except httpx.ConnectError:
                pass

            r = await in_flight
            assert r.status_code == 200 and r.json()["path"] == "/api/slow"

    asyncio.run(scenario())
    # Drained within the grace period: the phases end in requests_drained,
    # not grace_period_expired, and the exit is clean.
    assert p.proc.wait(timeout=GRACE + 2) == 0
    phases = [json.loads(line).get("phase") for line in p.output().splitlines() if '"phase"' in line]
    assert phases == ["draining", "websockets_closed", "requests_drained", "stopped"]


def test_grace_period_cuts_work_that_runs_too_long(start_backend):
    p = start_backend("--grace-period", "0.5")

    async def scenario():
        async with httpx.AsyncClient(timeout=10) as c:
            too_long = asyncio.ensure_future(c.get(f"{p.url}/ai/x?seconds=30"))

            async def request_started():  # the long request and this one
                return (await c.get(f"{p.url}/metrics/performance")).json()["active_connections"] >= 2

            await wait_until_async(request_started, 5, interval=0.05)
            p.terminate()
            r = await too_long
            assert r.status_code == 503
            assert r.headers["x-backend-instance"] == "backend-1"

    asyncio.run(scenario())
    # Cut at the grace period, not after the 30 s call: its 503 came back
    # and the process says why it exited uncleanly.
    assert p.proc.wait(timeout=5) == 1  # not clean: something was cut
    assert '"phase": "grace_period_expired"' in p.output()


def test_a_port_in_use_stops_startup_with_a_clear_error(run_backend):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_backend(0, busy.getsockname()[1])  # main port 0: any free one
    assert proc.returncode == 3
    assert "Address already in use" in proc.stdout
