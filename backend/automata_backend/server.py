"""Run the main and admin apps in one process and drain them on SIGTERM.

Drain order (one log line per phase):
1. readiness fails (/health -> 503 "draining") and the main listener closes,
   so new connections are refused (which balancers retry safely elsewhere);
2. open WebSockets are closed with 1001 "going away";
3. in-flight HTTP requests finish; idle keep-alive connections are closed;
4. whatever still runs when the grace period ends is cancelled;
then the AI pool's balancer closes its connection pools.
Exit status 0 after a clean drain, 1 if the grace period cut something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable

import uvicorn

from .app import create_admin_app, create_app
from .state import Backend

log = logging.getLogger("automata_backend.server")

# Closing handshakes normally take milliseconds; a client that never answers
# must not hold up the HTTP drain for the whole grace period.
WEBSOCKET_CLOSE_TIMEOUT = 5.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to `serve` below: one handler has
    to drive both servers, and uvicorn's own would re-raise SIGTERM on exit
    (ending the process with status -15 instead of 0)."""

    def capture_signals(self):
        return contextlib.nullcontext()


def _server(app, host: str, port: int, grace_period: float) -> _Server:
    return _Server(uvicorn.Config(
        app, host=host, port=port,
        http="h11", ws="websockets-sansio", loop="asyncio",  # pure Python: runs on Debian's python3
        lifespan="off",
        # The echo must show the real peer (the balancer), not what
        # X-Forwarded-For claims; the forwarded headers are echoed separately.
        proxy_headers=False,
        server_header=False,
        access_log=False,  # our middleware writes the access log
        log_config=None,  # keep the JSON logging configured in logs.py
        timeout_graceful_shutdown=grace_period,
        # Longer than any load balancer keeps an idle connection to us (NGINX
        # 4 s, HAProxy until its pool purge), so the balancer closes first: a
        # connection reused just as we close it (uvicorn's default is 5 s)
        # costs the balancer a retry, or the client an error where it does
        # not retry.
        timeout_keep_alive=75,
    ))


async def _wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    loop = asyncio.get_running_loop()
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _phase(phase: str, **fields) -> None:
    log.info("shutdown", extra={"fields": {"phase": phase, **fields}})


async def serve(backend: Backend, host: str, port: int, admin_host: str, admin_port: int) -> int:
    grace = backend.settings.grace_period
    main = _server(create_app(backend), host, port, grace)
    admin = _server(create_admin_app(backend), admin_host, admin_port, grace)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Bind both ports before serving either: a port in use ends the process
    # with one clear log line and status 3 instead of half an instance.
    sockets = [main.config.bind_socket(), admin.config.bind_socket()]
    for sock in sockets:
        # bind_socket() creates the socket with proto 0, so asyncio does not
        # recognise accepted connections as TCP and skips its usual
        # TCP_NODELAY: Nagle then holds every response on a reused
        # keep-alive connection until the peer's delayed ACK (~40 ms).
        # Linux copies the option from the listener to accepted sockets.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # The AI pool is resolved before the first request can need it.
    await backend.start()
    servers = [asyncio.ensure_future(server.serve(sockets=[sock]))
               for server, sock in zip((main, admin), sockets, strict=True)]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([*servers, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():  # a server ended on its own: it crashed
        stopping.cancel()
        for task in servers:
            task.cancel()
        await asyncio.gather(*servers, return_exceptions=True)
        await backend.stop(0)
        log.error("a server stopped unexpectedly; exiting")
        return 1

    deadline = loop.time() + grace
    backend.start_drain()
    for listener in main.servers:
        listener.close()
    _phase("draining", grace_period=grace, readiness="503", listener="closed")

    open_websockets = backend.websockets_open
    closed = await _wait_until(lambda: backend.websockets_open == 0,
                               min(deadline, loop.time() + WEBSOCKET_CLOSE_TIMEOUT))
    _phase("websockets_closed", closed=open_websockets - backend.websockets_open,
           left=backend.websockets_open, clean=closed)

    main.config.timeout_graceful_shutdown = max(deadline - loop.time(), 0.0)
    main.should_exit = True
    in_flight = backend.inflight_http
    clean = await _wait_until(lambda: backend.inflight_http == 0, deadline)
    _phase("requests_drained" if clean else "grace_period_expired",
           in_flight_at_start=in_flight, cut=backend.inflight_http)
    await servers[0]
    # Requests are drained, so the AI pool has nothing left in flight unless
    # the grace period cut it; its pools close within what is left of it.
    pool_clean = await backend.stop(max(deadline - loop.time(), 0.0))

    admin.should_exit = True
    await servers[1]
    clean = clean and closed and pool_clean
    _phase("stopped", clean=clean)
    return 0 if clean else 1
