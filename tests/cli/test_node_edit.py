"""node_edit.py marks NGINX servers down on the nodes between converges: its
edit has to be what the role itself renders for `nginx_lb_drained_servers`,
so a converge that drains the same server changes nothing, and taking the
mark away gives back the undrained file."""

from __future__ import annotations

import pytest

from automata_lb.node_edit import mark_servers
from traffic import model
from traffic import nginx as render

POLICY = model.load()
STABLE = render.servers_from([{"name": f"backend-{n}", "address": f"10.0.0.{n}", "port": 8000} for n in (1, 2, 3)])
# A weight and a failure budget of its own, as an inventory may give one server.
STABLE.append(render.Server("backend-4", "10.0.0.4", 8000, weight=3, max_fails=1, fail_timeout="5s"))
CANARY = render.servers_from([{"name": "canary-1", "address": "10.0.0.31", "port": 8000}])


def pools(drained: tuple[str, ...] = ()) -> str:
    return render.upstreams_block(POLICY, STABLE, CANARY, render.Options(drained=drained))


@pytest.mark.parametrize("down", [["backend-2"], ["backend-4"], ["canary-1"], ["backend-1", "backend-3"]])
def test_marking_down_is_what_the_role_renders_for_drained_servers(down):
    edited, found = mark_servers(pools(), down, [])
    assert edited == pools(tuple(down))
    assert found == set(down)
    assert edited != pools()


def test_marking_up_gives_back_the_undrained_pools_and_leaves_other_drains():
    edited, _ = mark_servers(pools(("backend-1", "backend-2")), [], ["backend-2"])
    assert edited == pools(("backend-1",))


def test_a_server_nginx_does_not_have_changes_nothing():
    assert mark_servers(pools(), ["backend-9"], []) == (pools(), set())
