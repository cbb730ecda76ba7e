"""The runtime API on edge-1: drain a server, change weights and the canary
share without a reload."""

from __future__ import annotations

import re
from collections import Counter

import httpx
import pytest

from haproxy_lab import CONFIG, WebSocketSession, runtime, server_states, wait_until_settled
from labkit import lab_policy, node

from automata_lb import edge as edge_ops
from automata_lb import targets
from traffic.haproxy import CANARY_SHARE_VAR

POLICY = lab_policy()
BACKENDS = [c.name for c in POLICY.classes] + [c.name + "_canary" for c in POLICY.classes if c.canary]


@pytest.fixture(scope="module")
def edge1():
    host = node("edge-1")
    wait_until_settled(host, BACKENDS)
    return host


def test_drained_server_takes_no_new_requests_while_its_websockets_finish(edge1, edge):
    url = edge["endpoints"]["haproxy_http"].replace("http://", "ws://") + "/ws"
    old = WebSocketSession(url)
    target = old.instance
    try:
        runtime(edge1, f"set server websocket/{target} state drain", f"set server api/{target} state drain")
        assert server_states(edge1, "websocket")[target].status == "DRAIN"
        # New WebSockets and requests go elsewhere...
        new = WebSocketSession(url)
        try:
            assert new.instance != target
            with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
                seen = Counter(client.get("/health").headers["x-backend-instance"] for _ in range(40))
            assert target not in seen, seen
            # ...while the session opened before the drain carries on.
            for n in range(5):
                assert old.echo(f"still here {n}") == target
        finally:
            new.close()
    finally:
        runtime(edge1, f"set server websocket/{target} state ready", f"set server api/{target} state ready")
        old.close()
    assert server_states(edge1, "api")[target].status == "UP"


def test_weight_change_shifts_traffic_without_reload(edge1, edge):
    try:
        runtime(edge1, "set weight api/backend-1 0")
        with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
            seen = Counter(client.get("/health").headers["x-backend-instance"] for _ in range(30))
        assert "backend-1" not in seen and seen.keys() & {"backend-2", "backend-3"}, seen
    finally:
        runtime(edge1, "set weight api/backend-1 100%")


def test_canary_share_changes_at_runtime(edge1, edge):
    configured = int(re.search(rf"set-var\s+{re.escape(CANARY_SHARE_VAR)} int\((\d+)\)",
                               edge1.file(CONFIG).content_string).group(1))
    runtime_node = next(n for n in targets.lab().edges if n.name == "edge-1")
    assert edge_ops.haproxy_canary_share(runtime_node) == configured
    try:
        edge_ops.set_haproxy_canary_share(runtime_node, 100)
        # The canary share applies to the canary classes (/api/...), each
        # request its own client through the trusted lab gateway.
        with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
            versions = {client.get("/api/runtime", headers={"x-forwarded-for": f"198.18.7.{n}"})
                        .headers["x-backend-version"] for n in range(30)}
        assert versions == {"canary"}
    finally:
        # Until the next reload at the latest; put the configured share back now.
        edge_ops.set_haproxy_canary_share(runtime_node, configured)
