"""Where endpoints come from.  A source answers `resolve()` with the
complete current set, or None for "unchanged"; the balancer asks again
every `refresh` seconds (None: the set never changes) and adds and drains
endpoints by the difference, so endpoints come and go without a restart.

A source that cannot answer raises DiscoveryError and the balancer keeps
what it knew: a DNS hiccup or a half-written file must not empty the pool.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from .endpoint import Address
from .errors import ConfigError, DiscoveryError

Resolver = Callable[[str, int], Awaitable[list[str]]]

_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?)*\.?$")


class StaticDiscovery:
    refresh = None

    def __init__(self, addresses: Iterable[Address | str]) -> None:
        self.addresses = sorted({a if isinstance(a, Address) else Address.parse(a) for a in addresses})
        self.description = "static:" + ",".join(map(str, self.addresses))

    async def resolve(self) -> list[Address]:
        return list(self.addresses)


async def getaddrinfo_a(name: str, port: int) -> list[str]:
    """A records through the event loop's resolver (the system's, /etc/hosts
    included), without blocking the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, family=socket.AF_INET,
                                                         type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class DnsDiscovery:
    """The A records of a name, re-resolved every `ttl` seconds: a
    Kubernetes headless Service answers with one record per ready pod."""

    def __init__(self, name: str, port: int, ttl: float = 5.0, resolver: Resolver = getaddrinfo_a) -> None:
        if not _DNS_NAME.match(name):
            raise ConfigError("discovery", f"{name!r} is not a DNS name")
        if not 1 <= port <= 65535:
            raise ConfigError("discovery", f"port must be 1-65535, got {port}")
        if not ttl > 0:
            raise ConfigError("refresh", f"must be > 0 seconds, got {ttl}")
        self.name, self.port, self.refresh = name, port, ttl
        self._resolver = resolver
        self.description = f"dns://{name}:{port}"

    async def resolve(self) -> list[Address]:
        try:
            hosts = await self._resolver(self.name, self.port)
        except OSError as exc:  # socket.gaierror included
            raise DiscoveryError(f"{self.description}: {exc}") from exc
        return sorted({Address(h, self.port) for h in hosts})


def parse_endpoint_lines(text: str, source: str) -> list[Address]:
    """One host:port per line; blank lines and # comments are ignored."""
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            found.add(Address.parse(line))
        except ConfigError as exc:
            raise DiscoveryError(f"{source} line {number}: {exc.message}") from None
    return sorted(found)


class FileDiscovery:
    """A file of host:port lines, polled every `interval` seconds.  Polling
    the file's identity (inode, size, mtime) is portable, cheap and sees
    both in-place edits and atomic replaces (write elsewhere, rename), the
    way a mounted ConfigMap is updated."""

    def __init__(self, path: str | os.PathLike, interval: float = 1.0) -> None:
        self.path = Path(path)
        if not interval > 0:
            raise ConfigError("refresh", f"must be > 0 seconds, got {interval}")
        self.refresh = interval
        self.description = f"file://{self.path}"
        self._seen: tuple | None = None

    async def resolve(self) -> list[Address] | None:
        try:
            st = self.path.stat()
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._seen:
                return None
            text = self.path.read_text()
        except OSError as exc:
            raise DiscoveryError(f"{self.description}: {exc.strerror or exc}") from exc
        addresses = parse_endpoint_lines(text, str(self.path))
        # Only remembered once parsed: a broken file is read again next time.
        self._seen = signature
        return addresses


def parse_discovery(spec: str, refresh: float = 5.0):
    """One string for the environment: `host:port,host:port` (static),
    `dns://name:port` (A records every `refresh` s) or `file:///path`
    (polled every `refresh` s, at most every second)."""
    spec = spec.strip()
    if spec.startswith("dns://"):
        rest = spec[len("dns://"):]
        name, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError("discovery", f"{spec!r}: expected dns://NAME:PORT")
        return DnsDiscovery(name, int(port), ttl=refresh)
    if spec.startswith("file://"):
        path = Path(spec[len("file://"):])
        if not path.is_absolute():
            raise ConfigError("discovery", f"{spec!r}: expected file:///absolute/path")
        if not path.is_file():
            raise ConfigError("discovery", f"{spec!r}: no such file")
        # Checked once here, so a broken file stops a process at start; later
        # edits that break it only keep the last good set (see FileDiscovery).
        try:
            parse_endpoint_lines(path.read_text(), str(path))
        except (OSError, DiscoveryError) as exc:
            raise ConfigError("discovery", str(exc)) from None
        return FileDiscovery(path, interval=min(refresh, 1.0))
    if "://" in spec:
        raise ConfigError("discovery", f"{spec!r}: unknown scheme; use host:port,..., dns://NAME:PORT or file:///PATH")
    parts = [p for p in (p.strip() for p in spec.split(",")) if p]
    if not parts:
        raise ConfigError("discovery", "is empty; give host:port,..., dns://NAME:PORT or file:///PATH")
    return StaticDiscovery(Address.parse(p, "discovery") for p in parts)
