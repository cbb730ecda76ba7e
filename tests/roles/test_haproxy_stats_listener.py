"""HAProxy's stats page and metrics, as the role renders them, on a real
HAProxy on loopback: the listener holds one address, the metrics answer
only the networks allowed to read them, the stats page only to its login.

Loopback is a whole /8, so one machine can be both a monitoring client
(127.0.0.2) and a stranger (127.0.0.1) to a listener on 127.0.0.1.
"""

from __future__ import annotations

import secrets
import shutil
import socket

import httpx
import pytest

from bench import render
from bench.servers import Server, haproxy_argv
from tests.kit import free_port

pytestmark = [pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs the haproxy binary (Debian package haproxy)"),
              pytest.mark.as_root]

MONITORING = "127.0.0.2"
STRANGER = "127.0.0.1"
USER = "ops"


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    """The rendered HAProxy, running; yields (stats URL, stats port, password)."""
    workdir = tmp_path_factory.mktemp("haproxy")
    port, stats_port = free_port(), free_port()
    password = secrets.token_urlsafe(18)
    # The pool's one server does not exist: the stats listener needs none.
    config = render.haproxy(workdir / "config", port, free_port(), stats_port, overrides={
        "haproxy_lb_metrics_allow_cidrs": [f"{MONITORING}/32"],
        "haproxy_lb_stats_user": USER, "haproxy_lb_stats_password": password,
    })
    with Server("haproxy", haproxy_argv(config), port, workdir):
        yield f"http://127.0.0.1:{stats_port}", stats_port, password


def _get(url: str, source: str, **kwargs) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=5) as client:
        return client.get(url, **kwargs)


def test_metrics_answer_the_monitoring_network(stats):
    url, _, _ = stats
    response = _get(f"{url}/metrics", MONITORING)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert any(line.startswith("haproxy_process_current_connections ") for line in response.text.splitlines())


def test_metrics_refuse_anyone_else(stats):
    url, _, _ = stats
    assert _get(f"{url}/metrics", STRANGER).status_code == 403


def test_the_stats_page_asks_everyone_for_its_login(stats):
    url, _, password = stats
    for source in (MONITORING, STRANGER):
        assert _get(f"{url}/haproxy-stats", source).status_code == 401
    assert _get(f"{url}/haproxy-stats;csv", STRANGER, auth=(USER, password)).status_code == 200


def test_the_listener_holds_one_address_only(stats):
    # Bound to 127.0.0.1, not to every address: another address of the same
    # machine finds nothing listening.
    _, stats_port, _ = stats
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.3", stats_port), timeout=2).close()
