"""The stats page (authenticated) and the Prometheus exporter, on both edges."""

from __future__ import annotations

import httpx
import pytest

from haproxy_lab import stats_password


@pytest.fixture(params=[0, 1], ids=["edge-1", "edge-2"])
def stats_url(request, lab):
    return lab["edges"][request.param]["endpoints"]["haproxy_stats"]


def test_stats_page_refuses_requests_without_valid_credentials(stats_url, lab):
    assert httpx.get(f"{stats_url}/haproxy-stats", timeout=5).status_code == 401
    wrong = httpx.get(f"{stats_url}/haproxy-stats", auth=("admin", "admin"), timeout=5)
    assert wrong.status_code == 401
    user = lab["credentials"]["haproxy_stats_user"]
    page = httpx.get(f"{stats_url}/haproxy-stats;csv", auth=(user, stats_password(lab)), timeout=5)
    assert page.status_code == 200
    assert "api,backend-1," in page.text


def test_metrics_are_prometheus_text_with_backend_and_server_series(stats_url):
    response = httpx.get(f"{stats_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = [line for line in response.text.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith('haproxy_backend_status{proxy="api"') for line in lines)
    servers = {line.split('server="')[1].split('"')[0] for line in lines
               if line.startswith('haproxy_server_status{proxy="api"')}
    assert servers == {"backend-1", "backend-2", "backend-3"}
