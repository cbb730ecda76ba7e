"""The edge tiers' runtime operations (automata_lb/tiers.py, run by the
nodes' parts in automata_lb/node/), on both lab nodes, against the real
NGINX and HAProxy: a drained instance gets no new request through either
load balancer until it is undrained, and a change a tier refuses names the
node and leaves the running configuration serving."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from labkit import tls_context, wait_until
from nginx_lab import instance

from automata_lb import edge as edge_ops
from automata_lb import targets, tiers
from automata_lb.targets import TargetError
from traffic import nginx as nginx_render

pytestmark = pytest.mark.usefixtures("trusted_gateway")


def _answered(url: str, ca_cert: str, ips, requests: int = 24) -> Counter:
    """Which instances answer `requests` stable-class requests, each from a
    client of its own; every one must be answered (200) by an instance."""
    seen = Counter()
    with httpx.Client(base_url=url, verify=tls_context(ca_cert), timeout=10) as client:
        for _ in range(requests):
            response = client.get("/auth/tiers", headers={"x-forwarded-for": ips.take()})
            assert response.status_code == 200, (url, response.status_code, response.text[:200])
            seen[instance(response)] += 1
    return seen


@pytest.fixture(scope="module")
def urls(edge) -> dict[str, str]:
    return {"nginx": edge["endpoints"]["nginx_https"], "haproxy": edge["endpoints"]["haproxy_http"]}


def test_a_drained_instance_gets_no_request_through_either_load_balancer_until_undrained(
        urls, ca_cert, ips, stable_backends):
    target = targets.lab()
    name = stable_backends[0]["name"]
    try:
        answers = edge_ops.drain(target, [name])
        for node, answer in answers.items():
            assert answer["haproxy"][name], (node, answer)  # the backends HAProxy drained it in
            assert answer["nginx"]["servers"] == [name], (node, answer)
        for lb, url in urls.items():
            seen = _answered(url, ca_cert, ips)
            assert name not in seen and len(seen) >= 2, (lb, seen)
        states = {s["status"] for n in edge_ops.probe_all(target) for s in n["haproxy"]["servers"]
                  if s["server"] == name and not s["backup"]}
        assert states == {"DRAIN"}
    finally:
        edge_ops.undrain(target, [name])
    for lb, url in urls.items():
        wait_until(lambda url=url: name in _answered(url, ca_cert, ips, 12), timeout=30,
                   what=f"{name} answering through {lb} again")


def test_a_change_nginx_refuses_names_the_nodes_and_the_old_configuration_keeps_serving(urls, ca_cert, ips):
    target = targets.lab()
    before = {n["node"]: n["nginx"]["canary_share"] for n in edge_ops.probe_all(target)}
    broken = tiers.Op("nginx", "share", {"file": nginx_render.CANARY_FILE, "text": "split_clients $x $y {\n"})
    with pytest.raises(TargetError) as refused:
        edge_ops.run_everywhere(target, "a broken canary file", [broken])
    for node in target.edges:
        assert f"{node.name}: nginx -t refused {nginx_render.CANARY_FILE}" in str(refused.value)
    assert {n["node"]: n["nginx"]["canary_share"] for n in edge_ops.probe_all(target)} == before
    assert sum(_answered(urls["nginx"], ca_cert, ips, 6).values()) == 6
