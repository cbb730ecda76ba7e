"""Changing HAProxy through the playbook on the lab: hitless reloads under
load, and bad input that never reaches the running HAProxy.

Converges here are limited to edge-1.  Bad input goes through
playbooks/edge.yml itself (its first play must stop it); the changes that
must reach HAProxy run only the HAProxy part of it (haproxy_lab.HAPROXY_PLAYBOOK)
to keep the suite short.  The module restores the inventory's state at the end.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass

import httpx
import pytest

from haproxy_lab import CONFIG, WebSocketSession, haproxy_load, haproxy_playbook, runtime, wait_for_new_worker_traffic
from labkit import LoadReport, lab_policy_overrides, node
from traffic.model import deep_merge

LOAD_CLIENTS = 4
MAX_LOAD_SECONDS = 600  # hard stop for the load generator whatever happens
# A TLS listener, reached here at the node's own address (the lab publishes
# the lab inventory's 9443 on 127.0.0.1 too).
TLS_PORT = 9443
TLS_BINDS = [{"port": 8000}, {"port": TLS_PORT, "tls": True}]


def _sha(host) -> str:
    return host.file(CONFIG).sha256sum


def _pids(host) -> tuple[str, str]:
    master = host.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    workers = host.run(f"pgrep -P {master} haproxy").stdout.split()
    return master, max(workers, key=int)


@pytest.fixture(scope="module")
def apply_haproxy(converge, tmp_path_factory):
    """apply_haproxy(extra_vars) converges HAProxy on edge-1 only."""
    playbook = haproxy_playbook(tmp_path_factory.mktemp("haproxy"))
    return lambda extra=None: converge(extra, limit="edge-1", playbook=playbook)


@pytest.fixture(scope="module")
def edge1(apply_haproxy):
    yield node("edge-1")
    restored = apply_haproxy()
    assert restored.rc == 0, restored.output[-3000:]


@dataclass
class Reloaded:
    result: object
    load: LoadReport
    echoes_after: list[str]
    pids_before: tuple[str, str]
    pids_after: tuple[str, str]


@pytest.fixture(scope="module")
def reloaded(edge1, edge, ca_cert, apply_haproxy) -> Reloaded:
    """Apply a change (canary share 10 -> 20, a TLS listener added) while a
    load generator runs and three WebSockets are open."""
    url = edge["endpoints"]["haproxy_http"]
    sessions = [WebSocketSession(url.replace("http://", "ws://") + "/ws") for _ in range(3)]
    pids_before = _pids(edge1)
    try:
        with haproxy_load(url, ca_cert, clients=LOAD_CLIENTS, max_seconds=MAX_LOAD_SECONDS) as load:
            load.wait_for_answers(50)
            result = apply_haproxy({"traffic_policy_overrides": deep_merge(lab_policy_overrides(), {"canary": {"share": 20}}),
                                    "haproxy_lb_binds": TLS_BINDS})
            if result.rc == 0:
                wait_for_new_worker_traffic(edge1, int(pids_before[1]))
        # Opened before the reload, still served by the old worker.
        echoes = []
        for n, session in enumerate(sessions):
            try:
                session.echo(f"after reload {n}")
                echoes.append("ok")
            except Exception as exc:  # noqa: BLE001 - any failure is a dropped WebSocket
                echoes.append(repr(exc))
    finally:
        for session in sessions:
            session.close()
    print(f"reload under load: {load.report.requests} requests, {len(load.report.failures)} failed")
    return Reloaded(result, load.report, echoes, pids_before, _pids(edge1))


def test_reload_under_load_drops_nothing(reloaded):
    assert reloaded.result.rc == 0, reloaded.result.output[-3000:]
    assert reloaded.load.failures == [], reloaded.load.failures[:10]
    assert reloaded.load.requests > 100
    assert reloaded.echoes_after == ["ok"] * 3


def test_change_is_a_reload_not_a_restart(reloaded, edge1):
    (master_before, worker_before), (master_after, worker_after) = reloaded.pids_before, reloaded.pids_after
    assert master_after == master_before, "HAProxy was restarted, not reloaded"
    assert worker_after != worker_before, "no new worker: the change was not applied"
    assert "proc.canary_percent: type=sint value=<20>" in runtime(edge1, "get var proc.canary_percent")


def _tls(address: str, ca: str, *, max_version: ssl.TLSVersion | None = None,
         ciphers: str | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if max_version:
        context.maximum_version = max_version
    if ciphers:
        context.set_ciphers(ciphers)
    return context.wrap_socket(socket.create_connection((address, TLS_PORT), timeout=5),
                               server_hostname="edge.automata.test")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_listener_terminates_modern_tls_only(reloaded, edge, ca_cert):
    with _tls(edge["address"], ca_cert) as tls:
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == "h2"
    with _tls(edge["address"], ca_cert, max_version=ssl.TLSVersion.TLSv1_2) as tls:
        assert tls.version() == "TLSv1.2" and "ECDHE" in tls.cipher()[0]
        assert not tls.session.has_ticket  # no-tls-tickets
    # No DHE key exchange, nothing below TLS 1.2.
    with pytest.raises(ssl.SSLError):
        _tls(edge["address"], ca_cert, max_version=ssl.TLSVersion.TLSv1_2,
             ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(ca_cert)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.wrap_socket(socket.create_connection((edge["address"], TLS_PORT), timeout=5),
                            server_hostname="edge.automata.test")


def test_tls_requests_reach_the_backends_marked_https(reloaded, edge, ca_cert):
    context = ssl.create_default_context(cafile=ca_cert)
    with context.wrap_socket(socket.create_connection((edge["address"], TLS_PORT), timeout=5),
                             server_hostname="edge.automata.test") as tls:
        tls.sendall(b"GET /api/tls HTTP/1.1\r\nHost: edge.automata.test\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := tls.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"strict-transport-security: max-age=" in head.lower()
    assert json.loads(body)["headers"]["x-forwarded-proto"] == "https"


def test_config_haproxy_rejects_never_lands_and_old_one_keeps_serving(edge1, edge, apply_haproxy):
    # Well-typed, passes the role's checks, but HAProxy cannot resolve the
    # address: `haproxy -c` refuses the candidate.
    before = _sha(edge1)
    master, worker = _pids(edge1)
    servers = [{"name": "backend-1", "address": "backend-1.invalid", "port": 8000}]
    result = apply_haproxy({"haproxy_lb_stable_servers": servers})
    assert result.rc != 0
    assert "haproxy -dW -c" in result.output or "failed to validate" in result.output, result.output[-3000:]
    assert _sha(edge1) == before, result.output[-3000:]
    assert _pids(edge1) == (master, worker)
    assert httpx.get(f"{edge['endpoints']['haproxy_http']}/health", timeout=5).status_code == 200
