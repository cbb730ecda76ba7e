"""Drift check: every tier's rendered configuration, read back into the
model's terms, equals what that tier can express of the policy.

NGINX is rendered by roles/nginx_lb and read with crossplane; HAProxy by
roles/haproxy_lb (config and rate-limit map); the Istio objects and the local
stack's configs by the Pulumi program under mocks.  A policy change is one
edit (here: an override), and the same check shows it reached every tier.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from policy_render import local_configs, mesh_objects

from automata_lb.tiers import HAPROXY, MESH, NGINX
from traffic import drift, haproxy, model

pytestmark = pytest.mark.as_root

# One change of the api class, rendered once: a value every tier renders
# (the response timeout) and one only the edge load balancers can (the rate).
CHANGE = {"classes": {"api": {"timeouts": {"response": "30s"}, "rate": {"per_second": 20}}}}


def views(rendered, tmp_path, overrides: dict) -> dict[str, tuple[dict, dict]]:
    """{tier: (what the policy says the tier renders, what it rendered)}."""
    policy = model.load(overrides=overrides)
    edge = rendered(overrides)
    nginx_local, haproxy_local, map_local = local_configs(overrides, tmp_path / "local")
    tls = edge.haproxy_cfg.count(" ssl crt ") > 0 or "Strict-Transport-Security" in edge.haproxy_cfg
    nginx_got = NGINX.read_back(edge.nginx_conf)
    return {
        "nginx": (NGINX.expected(policy, tls=nginx_got["tls"] is not None), nginx_got),
        "haproxy": (HAPROXY.expected(policy, tls=tls), HAPROXY.read_back(edge.haproxy_cfg, edge.rate_map)),
        "istio": (MESH.expected(policy), MESH.read_back(mesh_objects(overrides))),
        # The local stack has no certificates: NGINX renders no TLS; HAProxy's
        # global TLS defaults and its `if { ssl_fc }` HSTS rule are inert there.
        "local-nginx": (NGINX.expected(policy, tls=False), NGINX.read_back(nginx_local)),
        "local-haproxy": (HAPROXY.expected(policy), HAPROXY.read_back(haproxy_local, map_local, "frontend main")),
    }


@pytest.fixture(scope="module")
def shipped(rendered, tmp_path_factory):
    return views(rendered, tmp_path_factory.mktemp("shipped"), {})


@pytest.mark.parametrize("tier", ["nginx", "haproxy", "istio", "local-nginx", "local-haproxy"])
def test_every_tier_renders_the_policy_without_drift(shipped, tier):
    want, got = shipped[tier]
    assert drift.differences(want, got) == []


def test_the_check_fails_on_a_value_that_did_not_come_from_the_policy(rendered):
    # A hand edit of one number in the rendered HAProxy config (the burst of
    # /auth/ in the map) is found and named.
    edge = rendered({})
    policy = model.load()
    auth = policy.traffic_class("auth").rate
    tampered = edge.rate_map.replace(str(haproxy.pack(auth)), str(haproxy.pack(model.RateLimit(auth.per_second, 15))))
    problems = HAPROXY.differences(policy, HAPROXY.read_back(edge.haproxy_cfg, tampered))
    assert problems == ["classes.auth.rate: policy [5, 10], rendered [5, 15]"]
    # ...and in NGINX: a location's read timeout.
    conf = edge.nginx_conf.parent / "conf.d" / "routes.conf"
    original = conf.read_text()
    try:
        conf.write_text(original.replace("proxy_read_timeout           300s", "proxy_read_timeout           200s", 1))
        got = NGINX.read_back(edge.nginx_conf)
    finally:
        conf.write_text(original)
    # TLS is rendered only where the lab's certificate exists (policy_render.py).
    assert NGINX.differences(policy, got, tls=got["tls"] is not None) == [
        "classes.ai.response_ms: policy 300000, rendered 200000"]


@pytest.fixture(scope="module")
def changed(rendered, tmp_path_factory):
    return views(rendered, tmp_path_factory.mktemp("changed"), CHANGE)


def test_one_edit_reaches_every_tier(changed):
    for tier, (want, got) in changed.items():
        assert drift.differences(want, got) == [], tier
        assert got["classes"]["api"]["response_ms"] == 30_000, tier
        assert got["classes"]["compute"]["response_ms"] == 60_000, tier  # only the edited class moved


def test_a_rate_change_reaches_both_load_balancers_and_the_mesh_states_it_cannot(changed):
    for tier in ("nginx", "haproxy", "local-nginx", "local-haproxy"):
        want, got = changed[tier]
        assert drift.differences(want, got) == [], tier
        assert got["classes"]["api"]["rate"] == [20, 20], tier
    # Istio has no per-client rate limit without an EnvoyFilter: said, not dropped.
    assert changed["istio"][1]["classes"]["api"]["rate"] is None
    assert any("rate limits" in note for note in MESH.notes(model.load(overrides=CHANGE)))


def test_what_a_tier_cannot_express_is_written_into_its_config(rendered):
    edge = rendered({})
    policy = model.load()
    assert "# NOTE: trusted proxies: HAProxy follows at most 3 trusted hops" in edge.haproxy_cfg
    assert "no retry budget in HAProxy" in edge.haproxy_cfg
    nginx_http = edge.nginx_conf.read_text()
    assert "# NOTE: class websocket: NGINX has one read timeout" in nginx_http
    assert all(note for note in MESH.notes(policy))


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy binary not installed")
def test_haproxy_accepts_the_local_stack_config(tmp_path):
    _, cfg, rate_map = local_configs({}, tmp_path / "local")
    (tmp_path / "rate_limits.map").write_text(rate_map)
    path = tmp_path / "haproxy.cfg"
    path.write_text(re.sub(r"map_beg_int\([^)]*\)", f"map_beg_int({tmp_path}/rate_limits.map)", cfg))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
