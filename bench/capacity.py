"""How many idle keep-alive connections a load balancer holds at once.

N clients each open a connection, send a request and keep the connection
open.  Once all N are open at the same time, every one of them sends a second
request on its connection: a connection the load balancer refused, reset or
timed out in between shows up as an error.  Each client uses its own loopback
source address (127.1.x.y), as N real clients would, so per-client connection
and request limits of the "ours" configs apply per connection, not to one IP
holding thousands.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

FIRST_SOURCE = ipaddress.IPv4Address("127.1.0.1")
# Connections being opened (or requests in flight) at once: a burst of
# thousands would only measure the listen backlog, not what is held.
IN_FLIGHT = 256
# Well under HAProxy's and NGINX's keep-alive timeouts (10 s, 65 s): a stalled
# first round must not make the idle timeout close what was already held.
OP_TIMEOUT_S = 5.0


@dataclass
class CapacityResult:
    target: int
    answered: int = 0  # connections whose first request got a 200
    held: int = 0  # connections that answered both requests with 200
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.held == self.target and not self.errors


def raise_nofile(needed: int) -> None:
    """Raise the soft fd limit to the hard cap; fail early if that is not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if needed > hard:
        raise ValueError(f"capacity level {needed} needs more descriptors than the "
                         f"nofile hard limit {hard} allows")


def hold(port: int, n: int, path: str = "/", host: str = "bench.local", total_timeout_s: float = 60.0) -> CapacityResult:
    """Open n keep-alive connections to 127.0.0.1:port, hold them all, use each twice."""
    raise_nofile(n + 64)  # + the interpreter's own files
    return asyncio.run(_hold(port, n, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), total_timeout_s))


async def _hold(port: int, n: int, request: bytes, total_timeout_s: float) -> CapacityResult:
    result = CapacityResult(target=n)
    gate = asyncio.Semaphore(IN_FLIGHT)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [None] * n

    async def first(i: int) -> None:
        async with gate:
            try:
                source = str(FIRST_SOURCE + i)
                conns[i] = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), OP_TIMEOUT_S)
            except (TimeoutError, OSError) as exc:
                result.errors[f"connect: {_reason(exc)}"] += 1
                return
            if await _exchange(conns[i], request, result.errors, "first request"):
                result.answered += 1
            else:
                conns[i][1].close()
                conns[i] = None

    async def second(i: int) -> None:
        async with gate:
            if await _exchange(conns[i], request, result.errors, "second request"):
                result.held += 1

    start = time.monotonic()
    try:
        async with asyncio.timeout(total_timeout_s):
            await asyncio.gather(*(first(i) for i in range(n)))
            # Here every surviving connection is open at the same time.
            await asyncio.gather(*(second(i) for i in range(n) if conns[i] is not None))
    except TimeoutError:
        result.errors[f"not finished within {total_timeout_s:.0f}s"] += 1
    finally:
        result.seconds = time.monotonic() - start
        for conn in conns:
            if conn is not None:
                conn[1].close()
    return result


async def _exchange(conn, request: bytes, errors: Counter, which: str) -> bool:
    """Send one request and read the whole response; True if it was a 200."""
    reader, writer = conn
    try:
        writer.write(request)
        status, closing = await asyncio.wait_for(_read_response(reader), OP_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors[f"{which}: {_reason(exc)}"] += 1
        return False
    if status != 200:
        errors[f"{which}: status {status}"] += 1
        return False
    if closing:
        errors[f"{which}: answered with Connection: close"] += 1
        return False
    return True


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")  # empty trailer
    else:
        await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers.get("connection") == "close"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed by the server"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {OP_TIMEOUT_S:.0f}s"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__
