"""The tier adapters (automata_lb/tiers.py) and the nodes' parts they drive
(automata_lb/node/): every operation an adapter asks for exists on the node
and takes the arguments it is sent, so a renamed function or argument fails
here, not on a production node."""

from __future__ import annotations

import inspect

import pytest

from automata_lb import edge, tiers
from automata_lb.node import main

SERVER = {"name": "backend-9", "address": "10.0.0.9", "port": 8000}
OPERATIONS = [
    *(op for t in tiers.EDGE for op in (t.share(25), t.drain(["backend-1"]), t.undrain(["backend-1"]),
                                        t.members([SERVER], ["backend-2"], "backend-1"), t.install({}), t.live())),
    tiers.HAPROXY.share(25, runtime_only=True), tiers.HAPROXY.add(SERVER, ["backend-1"]),
    tiers.HAPROXY.command("show stat"), tiers.HAPROXY.share_now(), tiers.KEEPALIVED, *edge.PROBE,
    tiers.Op("system", "versions", {"urls": {"backend-1": "http://10.0.0.1:8000/health"}}),
]


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.part}.{op.name}")
def test_every_operation_an_adapter_sends_is_one_the_node_runs(op):
    function = getattr(main.part(op.part), op.name)
    inspect.signature(function).bind({"nginx_conf_dir": "/etc/nginx"}, **op.args)


def test_each_tier_is_found_by_its_name_and_an_unknown_one_is_refused_naming_the_known():
    assert [tiers.tier(name).name for name in ("nginx", "haproxy", "istio")] == ["nginx", "haproxy", "istio"]
    with pytest.raises(ValueError, match=r"unknown tier 'envoy' \(known: nginx, haproxy, istio\)"):
        tiers.tier("envoy")

