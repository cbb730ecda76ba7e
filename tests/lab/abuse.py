"""Abusive clients for tests/lab/test_abuse.py, on real sockets.

Each client does one thing a well-behaved HTTP client never does (headers or
a body one byte at a time, reading the response one byte at a time, oversized
headers, URIs or bodies, malformed requests) and records how the load
balancer ended it: the status it answered, if any, how the connection ended
(`closed`, `reset`, or still `open` when the client gave up) and when.
Every client stops by itself at its `give_up` time.

The TCP-level clients (a connection flood, many idle connections) need a
source address of their own, so they run as a script inside a lab client
host (lab/netns.py):

    ip netns exec NAME python tests/lab/abuse.py flood 10.77.7.11 443 --tls --seconds 10
    ip netns exec NAME python tests/lab/abuse.py idle 10.77.7.11 80 --count 250 --give-up 30

and print their outcome as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import selectors
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Ending:
    """How a load balancer ended one abusive connection."""

    status: int | None  # the status line it answered, None when it only closed
    how: str            # closed (FIN), reset (RST), open (still open when the client gave up)
    seconds: float      # from the moment the abuse began (see each client) to the end
    received: int = 0   # response bytes read
    answered: float | None = None  # when the status line arrived (same origin as seconds)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_name: str = "localhost"

    def connect(self, *, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so the advertised window is small from the start.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((self.host, self.port))
        return self.tls.wrap_socket(raw, server_hostname=self.server_name) if self.tls else raw


def _status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/"):
        return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def wait_for_end(sock: socket.socket, started: float, give_up: float, data: bytes = b"",
                 answered: float | None = None) -> Ending:
    """Read until the peer closes or resets the connection, or `give_up` (monotonic) passes."""
    def ending(how: str) -> Ending:
        return Ending(_status(data), how, time.monotonic() - started, len(data), answered)
    if data and answered is None:
        answered = time.monotonic() - started
    while True:
        left = give_up - time.monotonic()
        if left <= 0:
            return ending("open")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return ending("reset")
        except ssl.SSLError:
            # A TLS connection cut without close_notify: the peer closed or reset it.
            return ending("closed")
        if not chunk:
            return ending("closed")
        if not data:
            answered = time.monotonic() - started
        data += chunk


def _send(sock: socket.socket, data: bytes) -> bool:
    """False when the load balancer already closed the connection."""
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return False


def _poll(sock: socket.socket) -> bytes | None:
    """What the load balancer sent so far without waiting: None while it is
    silent, b"" once it closed, else the bytes (kept by the caller).  A plain
    recv, not a peek, because a TLS socket cannot peek, and a readable TLS
    socket may only carry session tickets."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""
    finally:
        sock.setblocking(True)


def request_head(path: str, client: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: edge.automata.test", f"X-Forwarded-For: {client}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- one abusive client each ---------------------------------------------------------------------------

def _ended(sock: socket.socket, started: float, data: bytearray) -> Ending | None:
    """The ending if the load balancer closed the connection already; bytes it
    sent meanwhile are added to `data`."""
    chunk = _poll(sock)
    if chunk == b"":
        return Ending(_status(bytes(data)), "closed", time.monotonic() - started, len(data))
    if chunk:
        data += chunk
    return None


def _trickle(sock: socket.socket, payload: bytes, started: float, *, pace: float, until: float,
             data: bytearray) -> tuple[Ending | None, float]:
    """Sends `payload` one byte every `pace` seconds until it is sent, `until`
    (monotonic) passes or the load balancer answers.  Returns the ending if
    the connection ended, and when the last byte went out (from `started`)."""
    last = 0.0
    for byte in payload:
        if time.monotonic() > until:
            break
        ending = _ended(sock, started, data)
        if ending:
            return ending, last
        if data:
            break  # answered: what follows is read by wait_for_end
        if not _send(sock, bytes([byte])):
            return Ending(_status(bytes(data)), "reset", time.monotonic() - started, len(data)), last
        last = time.monotonic() - started
        time.sleep(pace)
    return None, last


def slow_headers(target: Target, client: str, *, pace: float, give_up: float) -> Ending:
    """Headers one byte every `pace` seconds, never finished.  Time: from connect."""
    sock = target.connect()
    started = time.monotonic()
    head = request_head("/api/abuse/slow-headers", client)[:-2]  # no blank line: never complete
    data = bytearray()
    ending, _ = _trickle(sock, head + b"X-Padding: " + b"a" * 10_000, started, pace=pace, until=give_up, data=data)
    return ending or wait_for_end(sock, started, give_up, bytes(data))


def slow_body(target: Target, client: str, *, pace: float, trickle: float, give_up: float) -> tuple[Ending, float]:
    """Complete headers, then the body one byte every `pace` seconds for
    `trickle` seconds, then silence.  Time: from the end of the headers.
    Returns the ending and when the last byte went out (seconds, same origin)."""
    sock = target.connect()
    size = 100_000
    _send(sock, request_head("/api/abuse/slow-body", client, f"Content-Length: {size}",
                             "Content-Type: application/octet-stream", method="POST"))
    started = time.monotonic()
    data = bytearray()
    ending, last = _trickle(sock, b"x" * size, started, pace=pace, until=min(give_up, started + trickle), data=data)
    return ending or wait_for_end(sock, started, give_up, bytes(data)), last


# tcp_info's first byte (linux/tcp.h): the connection's state.
TCP_ESTABLISHED, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 7, 8


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def slow_reader(target: Target, client: str, size: int, *, pace: float, give_up: float,
                gave_up: Callable[[int], bool] | None = None) -> Ending:
    """Asks for `size` bytes and reads them one byte every `pace` seconds,
    through a small receive window.  Time: from the request.

    A load balancer that closes with a FIN queues it behind the response
    bytes the client has not taken, so the client cannot see that close;
    `gave_up(local port)`, asked about once a second, tells from the load
    balancer's side (ending `gave-up`)."""
    sock = target.connect(rcvbuf=4096)
    _send(sock, request_head(f"/api/abuse/slow-reader?size={size}", client))
    started = time.monotonic()
    data = b""
    asked = started
    while time.monotonic() < give_up:
        if gave_up and data and time.monotonic() - asked >= 1:
            asked = time.monotonic()
            if gave_up(sock.getsockname()[1]):
                return Ending(_status(data), "gave-up", time.monotonic() - started, len(data))
        sock.settimeout(max(0.1, give_up - time.monotonic()))
        try:
            byte = sock.recv(1)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return Ending(_status(data), "reset", time.monotonic() - started, len(data))
        except ssl.SSLError:
            return Ending(_status(data), "closed", time.monotonic() - started, len(data))
        if not byte:
            return Ending(_status(data), "closed", time.monotonic() - started, len(data))
        data += byte
        if b"\r\n\r\n" not in data:
            continue  # the head is read at once; the body is what is read slowly
        # A byte at a time comes out of what TLS already decrypted, without
        # touching the socket: its state says whether the load balancer
        # has given up on this client meanwhile.
        state = tcp_state(sock)
        if state != TCP_ESTABLISHED:
            return Ending(_status(data), "closed" if state == TCP_CLOSE_WAIT else "reset",
                          time.monotonic() - started, len(data))
        time.sleep(pace)
    return Ending(_status(data), "open", time.monotonic() - started, len(data))


def one_request(target: Target, raw: bytes, *, give_up: float) -> Ending:
    """Sends `raw` at once (a whole, possibly broken, request).  Time: from the send."""
    sock = target.connect()
    started = time.monotonic()
    _send(sock, raw)
    return wait_for_end(sock, started, give_up)


def big_body(target: Target, client: str, size: int, *, give_up: float) -> Ending:
    """Announces a body of `size` bytes and sends it as fast as the load
    balancer reads it.  Time: from the end of the headers."""
    sock = target.connect()
    _send(sock, request_head("/api/abuse/big-body", client, f"Content-Length: {size}",
                             "Content-Type: application/octet-stream", method="POST"))
    started = time.monotonic()
    chunk = b"x" * 65536
    sent = 0
    data = bytearray()
    while sent < size and time.monotonic() < give_up:
        ending = _ended(sock, started, data)
        if ending:
            return ending
        if data:
            break
        if not _send(sock, chunk[:min(len(chunk), size - sent)]):
            return Ending(_status(bytes(data)), "reset", time.monotonic() - started, len(data))
        sent += len(chunk)
    return wait_for_end(sock, started, give_up, bytes(data))


# --- TCP-level clients, run inside a client host (lab/netns.py) -----------------------------------------

async def _flood(host: str, port: int, tls: bool, seconds: float, workers: int, path: str) -> dict:
    """New connections as fast as they go for `seconds`, one request each.
    Reports the count of each outcome and when the first 429 and the first
    connection closed before any answer came (from the start)."""
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's own node; speed, not trust
    outcomes: Counter = Counter()
    first: dict[str, float] = {}
    started = time.monotonic()

    def note(outcome: str, refused: bool) -> None:
        outcomes[outcome] += 1
        if refused:
            first.setdefault("connection_refused", time.monotonic() - started)
        elif outcome == "429":
            first.setdefault("429", time.monotonic() - started)

    async def worker() -> None:
        while time.monotonic() - started < seconds:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost" if tls else None), 5)
            except (OSError, ssl.SSLError, TimeoutError):
                note("refused", True)
                continue
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: edge.automata.test\r\nConnection: close\r\n\r\n".encode())
                status = _status(await asyncio.wait_for(reader.readline(), 5))
                note(str(status) if status else "refused", status is None)
            except (OSError, ssl.SSLError, TimeoutError):
                note("refused", True)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 2)
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"connections": sum(outcomes.values()), "seconds": time.monotonic() - started,
            "outcomes": dict(outcomes), "first": first}


def _idle(host: str, port: int, count: int, give_up: float) -> dict:
    """Opens `count` connections that never send a byte; reports how each ended."""
    socks = []
    started = time.monotonic()
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect((host, port))
        except OSError:
            socks.append((None, time.monotonic()))
            continue
        socks.append((sock, time.monotonic()))
    opened = time.monotonic() - started
    endings: list[dict] = [{}] * count
    deadline = started + give_up
    pending = {i for i, (s, _) in enumerate(socks) if s is not None}
    for i, (s, _) in enumerate(socks):
        if s is None:
            endings[i] = {"how": "refused", "status": None, "seconds": 0.0}
    sel = selectors.DefaultSelector()
    for i in pending:
        socks[i][0].setblocking(False)
        sel.register(socks[i][0], selectors.EVENT_READ, i)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            i = key.data
            sock, opened_at = socks[i]
            try:
                data = sock.recv(4096)
                how = "closed"
            except ConnectionResetError:
                data, how = b"", "reset"
            endings[i] = {"how": how, "status": _status(data), "seconds": time.monotonic() - opened_at}
            sel.unregister(sock)
            sock.close()
            pending.discard(i)
    for i in pending:
        endings[i] = {"how": "open", "status": None, "seconds": time.monotonic() - socks[i][1]}
        socks[i][0].close()
    return {"opened_in": opened, "endings": endings}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    flood = sub.add_parser("flood", help="new connections as fast as possible, one request each")
    flood.add_argument("host")
    flood.add_argument("port", type=int)
    flood.add_argument("--tls", action="store_true")
    flood.add_argument("--seconds", type=float, required=True)
    flood.add_argument("--workers", type=int, default=32)
    flood.add_argument("--path", default="/api/abuse/flood")
    idle = sub.add_parser("idle", help="many connections that never send a byte")
    idle.add_argument("host")
    idle.add_argument("port", type=int)
    idle.add_argument("--count", type=int, required=True)
    idle.add_argument("--give-up", type=float, required=True)
    args = parser.parse_args(argv)
    if args.mode == "flood":
        out = asyncio.run(_flood(args.host, args.port, args.tls, args.seconds, args.workers, args.path))
    else:
        out = _idle(args.host, args.port, args.count, args.give_up)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])

