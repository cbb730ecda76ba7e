"""The nodes' parts (automata_lb/node/) edit the pools between converges:
NGINX's marks servers down, and both load balancers' add and remove stable
servers.  Each edit has to be what the role itself renders for the same
inventory (`nginx_lb_drained_servers`, the longer or shorter
`edge_backends`), so the next converge changes nothing."""

from __future__ import annotations

import pytest

from automata_lb.node import haproxy as node_haproxy
from automata_lb.node import nginx as node_nginx
from traffic import haproxy as haproxy_render
from traffic import model
from traffic import nginx as render

POLICY = model.load()
POOLS_WITH = {"nginx": node_nginx.pools_with, "haproxy": node_haproxy.pools_with}
STABLE = render.servers_from([{"name": f"backend-{n}", "address": f"10.0.0.{n}", "port": 8000} for n in (1, 2, 3)])
# A weight and a failure budget of its own, as an inventory may give one server.
STABLE.append(render.Server("backend-4", "10.0.0.4", 8000, weight=3, max_fails=1, fail_timeout="5s"))
CANARY = render.servers_from([{"name": "canary-1", "address": "10.0.0.31", "port": 8000}])


def pools(drained: tuple[str, ...] = ()) -> str:
    return render.upstreams_block(POLICY, STABLE, CANARY, render.Options(drained=drained))


@pytest.mark.parametrize("down", [["backend-2"], ["backend-4"], ["canary-1"], ["backend-1", "backend-3"]])
def test_marking_down_is_what_the_role_renders_for_drained_servers(down):
    edited, found = node_nginx.mark_servers(pools(), down, [])
    assert edited == pools(tuple(down))
    assert found == set(down)
    assert edited != pools()


def test_marking_up_gives_back_the_undrained_pools_and_leaves_other_drains():
    edited, _ = node_nginx.mark_servers(pools(("backend-1", "backend-2")), [], ["backend-2"])
    assert edited == pools(("backend-1",))


def test_a_server_nginx_does_not_have_changes_nothing():
    assert node_nginx.mark_servers(pools(), ["backend-9"], []) == (pools(), set())


# --- members: stable servers added and removed between converges ---------------------

PLAIN = [{"name": f"backend-{n}", "address": f"10.0.0.{n}", "port": 8000} for n in (1, 2, 3, 4, 5)]


def both_pools(policy: model.Policy, servers: list[dict]) -> dict[str, str]:
    stable = render.servers_from(servers)
    return {"nginx": render.upstreams_block(policy, stable, CANARY, render.Options()),
            "haproxy": haproxy_render.backends_block(policy, haproxy_render.servers_from(servers),
                                                     haproxy_render.servers_from([{"name": "canary-1",
                                                                                   "address": "10.0.0.31",
                                                                                   "port": 8000}]),
                                                     haproxy_render.Options())}


# The lab's policy has every balancing the tiers share (round robin, least
# connections, a client hash) and canary pools with stable backups.
@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_added_servers_are_what_the_render_of_the_longer_list_says(lb):
    edited = POOLS_WITH[lb](both_pools(POLICY, PLAIN[:3])[lb], PLAIN[3:], set(), "backend-3")
    assert edited == both_pools(POLICY, PLAIN)[lb]


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_removed_servers_are_what_the_render_of_the_shorter_list_says(lb):
    kept = [PLAIN[0], PLAIN[2]]
    edited = POOLS_WITH[lb](both_pools(POLICY, PLAIN[:4])[lb], [], {"backend-2", "backend-4"}, "backend-3")
    assert edited == both_pools(POLICY, kept)[lb]
