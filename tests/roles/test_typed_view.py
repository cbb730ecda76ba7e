"""What text from the command line becomes in a role's typed view
(rolekit/typed.py, docs/decisions.md D6), on the roles' real argument specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from rolekit.typed import typed_view

ROLES = Path(__file__).resolve().parents[2] / "roles"
NGINX = ROLES / "nginx_lb"


@pytest.mark.parametrize(("name", "given", "typed"), [
    ("nginx_lb_http_port", "8080", 8080),
    ("nginx_lb_tls_enabled", "false", False),
    ("nginx_lb_tls_enabled", "yes", True),
    ("nginx_lb_deny_cidrs", "10.0.0.0/8, 192.0.2.0/24", ["10.0.0.0/8", "192.0.2.0/24"]),
    ("nginx_lb_deny_cidrs", "", []),
    ("nginx_lb_policy_overrides", '{"client": {"connections_per_client": 50}}', {"client": {"connections_per_client": 50}}),
    # Elements and their options are typed too (a JSON list may carry text).
    ("nginx_lb_servers", [{"name": "b", "address": "10.0.0.1", "port": "8000", "backup": "no"}],
     [{"name": "b", "address": "10.0.0.1", "port": 8000, "backup": False}]),
    # A str option given a number from YAML reads as text.
    ("nginx_lb_send_timeout", 30, "30"),
])
def test_text_becomes_the_declared_type(name, given, typed):
    assert typed_view({name: given}, NGINX) == {name.removeprefix("nginx_lb_"): typed}


@pytest.mark.parametrize(("values", "message"), [
    ({"nginx_lb_http_port": "eighty"}, "nginx_lb_http_port: expected int, got 'eighty'"),
    ({"nginx_lb_servers": [{"name": "b", "address": "a", "port": "x"}]}, "nginx_lb_servers[0].port: expected int"),
    ({"nginx_lb_deny_cidrs": '["10.0.0.0/8"]'}, "nginx_lb_deny_cidrs: expected a list; on the command line"),
    ({"nginx_lb_pools": "[]", "nginx_lb_http_port": 80}, "nginx_lb_pools: not a variable of role nginx_lb"),
])
def test_what_cannot_be_typed_is_refused_by_name(values, message):
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        typed_view(values, NGINX)


def test_a_secret_stays_out_of_the_view():
    # no_log options (haproxy_lb's stats password, edge_vip's VRRP password):
    # set_fact prints the view at -v, so the role reads them by name.
    given = {"edge_vip_auth_pass": "Zq8rT2mW", "edge_vip_advert_int": "2"}
    assert typed_view(given, ROLES / "edge_vip") == {"advert_int": 2}


@pytest.mark.parametrize(("name", "meant"), [
    ("nginx_lb_worker_conections", "nginx_lb_worker_connections"),
    ("nginx_lb_listen_adress", "nginx_lb_listen_address"),
    ("nginx_lb_tls_enable", "nginx_lb_tls_enabled"),
    # Removed with the traffic policy: nothing declared is close, so no guess
    # (rather than a wrong one).
    ("nginx_lb_conn_limit_per_ip", None),
])
def test_an_unknown_name_is_refused_with_the_closest_declared_one(name, meant):
    with pytest.raises(AnsibleFilterError) as refused:
        typed_view({name: "10"}, NGINX)
    message = str(refused.value)
    assert message.startswith(f"{name}: not a variable of role nginx_lb")
    if meant:
        assert f", did you mean {meant}?" in message
    else:
        assert "did you mean" not in message
