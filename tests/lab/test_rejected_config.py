"""A configuration that passes every check of the inventory but that the load
balancer itself refuses (`nginx -t`, `haproxy -c`) never reaches it: the
converge fails on that host and the running load balancer keeps serving its
old configuration, with the same processes.

One converge of both nodes shows both: edge-1 gets a value only NGINX
refuses, edge-2 one only HAProxy refuses (each node's own host_vars file,
gone when the module ends).  On edge-2 NGINX's role passes and changes
nothing, so the run reaches HAProxy's check there.

Bad input the inventory's checks can see never gets this far
(tests/roles/test_refusals.py, offline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from haproxy_lab import CONFIG
from labkit import ClientIPs, PlaybookRun, host_vars, node

from automata_lb import edge, targets

pytestmark = pytest.mark.usefixtures("trusted_gateway")

EDGE1, EDGE2 = "edge-1", "edge-2"
STAGED_DIR, NGINX_DIR = "/etc/nginx/staging", "/etc/nginx"
REFUSED = {
    # Passes every type and input check (a count and a size), but NGINX
    # needs at least two proxy buffers: only `nginx -t` on the staged tree
    # can tell.
    EDGE1: {"nginx_lb_proxy_buffers": "1 4k"},
    # Well-typed, passes the role's checks, but HAProxy cannot resolve the
    # address: `haproxy -c` refuses the candidate.
    EDGE2: {"haproxy_lb_stable_servers": [{"name": "backend-1", "address": "backend-1.invalid", "port": 8000}]},
}


def _haproxy_processes(host) -> tuple[str, str]:
    master = host.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    workers = host.run(f"pgrep -P {master} haproxy").stdout.split()
    return master, max(workers, key=int)


@dataclass
class Refused:
    run: PlaybookRun
    haproxy_config_before: str
    haproxy_processes_before: tuple[str, str]


@pytest.fixture(scope="module")
def refused(converge) -> Refused:
    edge2 = node(EDGE2)
    config, processes = edge2.file(CONFIG).sha256sum, _haproxy_processes(edge2)
    with host_vars(REFUSED):
        return Refused(converge(), config, processes)


def test_a_config_nginx_rejects_never_lands_and_the_old_one_keeps_serving(refused, https):
    result = refused.run
    assert result.rc != 0
    assert "Check the candidate configuration as a whole" in result.failed.get(EDGE1, {}).get("task", ""), \
        result.output[-3000:]
    assert 'there must be at least 2 "proxy_buffers"' in result.output
    edge1 = node(EDGE1)
    staged, live = (edge1.file(f"{d}/proxy_params").content_string for d in (STAGED_DIR, NGINX_DIR))
    assert re.search(r"proxy_buffers\s+1 4k;", staged)  # it was rendered and checked...
    assert not re.search(r"proxy_buffers\s+1 4k;", live)  # ...but never installed
    assert https.get("/api/still-serving", headers={"x-forwarded-for": ClientIPs().take()}).status_code == 200


def test_what_a_refused_converge_left_in_staging_does_not_hold_back_the_next_change(refused):
    # The refused candidate is still staged on edge-1 (above); a canary move
    # made without a converge is checked against the live tree plus itself.
    target = targets.lab()
    share = next(n["nginx"]["canary_share"] for n in edge.probe_all(target) if n["node"] == EDGE1)
    try:
        moved = edge.set_canary_share(target, share + 5, record=True)
        assert moved[EDGE1]["nginx"] == "reloaded", moved
    finally:
        edge.set_canary_share(target, share, record=True)


def test_a_config_haproxy_rejects_never_lands_and_the_old_one_keeps_serving(refused, lab):
    result, edge2 = refused.run, node(EDGE2)
    assert "Write the HAProxy configuration" in result.failed.get(EDGE2, {}).get("task", ""), result.output[-3000:]
    assert "haproxy -dW -c" in result.output or "failed to validate" in result.output, result.output[-3000:]
    assert edge2.file(CONFIG).sha256sum == refused.haproxy_config_before, result.output[-3000:]
    assert _haproxy_processes(edge2) == refused.haproxy_processes_before
    endpoints = next(e["endpoints"] for e in lab["edges"] if e["name"] == EDGE2)
    assert httpx.get(f"{endpoints['haproxy_http']}/health", timeout=5).status_code == 200
