"""Safe change of the NGINX configuration, through playbooks/edge.yml.

Order matters and is the file order: a config NGINX rejects, then a
change under load, restored when its class ends (test_playbook.py's
idempotence, later in the suite, proves the restore put everything back).
Bad input never gets this far: tests/roles/test_refusals.py.
"""

from __future__ import annotations

import re
import time

import pytest

from labkit import ClientIPs, LoadGenerator, lab_policy_overrides, node
from traffic.model import deep_merge

pytestmark = pytest.mark.usefixtures("trusted_gateway")

EDGE1 = "edge-1"


STAGED_DIR, NGINX_DIR = "/etc/nginx/staging", "/etc/nginx"


def test_config_nginx_rejects_never_lands_and_the_old_one_keeps_serving(converge, https):
    # Passes every type and input check (a count and a size), but NGINX
    # needs at least two proxy buffers: only `nginx -t` on the staged tree
    # can tell.
    result = converge({"nginx_lb_proxy_buffers": "1 4k"}, limit=EDGE1)
    assert result.rc != 0
    assert "Check the candidate configuration as a whole" in result.output
    assert 'there must be at least 2 "proxy_buffers"' in result.output
    edge1 = node(EDGE1)
    staged, live = (edge1.file(f"{d}/proxy_params").content_string for d in (STAGED_DIR, NGINX_DIR))
    assert re.search(r"proxy_buffers\s+1 4k;", staged)  # it was rendered and checked...
    assert not re.search(r"proxy_buffers\s+1 4k;", live)  # ...but never installed
    assert https.get("/api/still-serving", headers={"x-forwarded-for": ClientIPs().take()}).status_code == 200


# The change under load: the api class's response timeout (the traffic
# policy's, through the inventory's overrides) drops to 2 s and a network is
# denied.  Both are observable afterwards, so the test also proves the reload
# took effect.
CHANGE = {"traffic_policy_overrides": deep_merge(lab_policy_overrides(),
                                                 {"classes": {"api": {"timeouts": {"response": "2s"}}}}),
          "nginx_lb_deny_cidrs": ["192.0.2.0/24"]}


class TestChangeUnderLoad:
    @pytest.fixture(scope="class")
    def changed(self, converge, edge, ca_cert):
        with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), max_seconds=150) as load:
            load.wait_for_answers(50)
            result = converge(CHANGE, limit=EDGE1)
            if result.rc == 0:
                # Traffic on the new workers too: NGINX closes the old
                # workers' idle keep-alive connections, so what the load
                # sends from now on reaches the new ones.
                load.wait_for_answers(50, since=time.time())
        report = load.report
        print(f"\nreload under load: {report.requests} requests, {len(report.failures)} failed; "
              f"{report.ws_messages} WebSocket echoes, {len(report.ws_failures)} dropped")
        yield result, report
        restored = converge(limit=EDGE1)
        assert restored.rc == 0, restored.output[-3000:]

    def test_the_change_was_applied_by_a_reload(self, changed):
        result, _ = changed
        assert result.rc == 0, result.output[-3000:]
        assert result.changed[EDGE1] > 0
        assert "nginx_lb : Reload nginx" in result.handlers, result.output[-3000:]

    def test_no_request_failed(self, changed):
        _, report = changed
        assert report.requests > 100
        assert report.failures == []

    def test_no_websocket_was_dropped(self, changed):
        _, report = changed
        assert report.ws_messages > 20
        assert report.ws_failures == []

    def test_slow_ai_call_outlives_the_default_read_timeout(self, changed, https):
        client = {"x-forwarded-for": ClientIPs().take()}
        # The default pools now give up after 2 s (504, after the retry)...
        assert https.get("/api/slow", params={"delay": 3}, headers=client).status_code == 504
        # ...while the AI pool keeps its own 300 s.
        ai = https.get("/ai/slow", params={"seconds": 3}, headers=client)
        assert ai.status_code == 200
        assert ai.json()["seconds"] == 3

    def test_denied_network_gets_403(self, changed, https):
        assert https.get("/api/x", headers={"x-forwarded-for": "192.0.2.77"}).status_code == 403
        assert https.get("/api/x", headers={"x-forwarded-for": ClientIPs().take()}).status_code == 200
