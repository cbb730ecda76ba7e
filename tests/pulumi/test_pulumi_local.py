"""The `local` stack (pulumi-docker): the Compose-style environment, proven
with the same mocks; the generated proxy and Prometheus configs are checked
by the real haproxy and promtool binaries where they are installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from infra import local, offline
from monitoring import rules
from monitoring.__main__ import DASHBOARD_JSON


def containers(records) -> dict[str, dict]:
    return {r.inputs["name"]: r.inputs for r in records if r.type == "docker:index/container:Container"}


def upload(container: dict, path: str | None = None) -> str:
    """The file uploaded to `path`, or the only/first one (the main config)."""
    files = {u["file"]: u["content"] for u in container["uploads"]}
    return files[path] if path else container["uploads"][0]["content"]


def test_local_stack_creates_no_kubernetes_objects(records):
    assert [r for r in records("local") if r.type.startswith("kubernetes:")] == []


def test_published_ports_follow_the_lab_map_on_loopback_only(records):
    published = {(name, p["external"], p["internal"], p["ip"]) for name, c in containers(records("local")).items()
                 for p in c.get("ports", [])}
    assert published == {
        ("automata-local-nginx", 8080, 80, "127.0.0.1"),
        ("automata-local-haproxy", 8000, 8000, "127.0.0.1"), ("automata-local-haproxy", 8404, 8404, "127.0.0.1"),
        ("automata-local-prometheus", 9090, 9090, "127.0.0.1"), ("automata-local-grafana", 3000, 3000, "127.0.0.1"),
    }


def test_backends_run_the_configured_image_hardened(records):
    backends = {n: c for n, c in containers(records("local")).items() if "backend" in n}
    assert sorted(backends) == ["automata-local-backend-1", "automata-local-backend-2", "automata-local-backend-3"]
    for c in backends.values():
        assert c["image"] == "ghcr.io/automata/backend:1.0.0"
        assert (c["user"], c["readOnly"], c["securityOpts"]) == ("10001", True, ["no-new-privileges:true"])
        assert c["stopTimeout"] > local.GRACE_PERIOD


def test_canary_image_adds_a_canary_backend_behind_both_balancers():
    recs = offline.run("local", {"canaryImage": "ghcr.io/automata/backend:1.1.0"})
    canary = containers(recs)["automata-local-canary-1"]
    assert canary["image"] == "ghcr.io/automata/backend:1.1.0"
    assert canary["command"][canary["command"].index("--version") + 1] == "canary"
    # Behind both balancers, as the policy's canary track (share and A/B rule).
    assert "server                          canary-1 canary-1:8000" in upload(containers(recs)["automata-local-haproxy"])
    assert "server                       canary-1:8000 " in upload(containers(recs)["automata-local-nginx"])


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy binary not installed")
def test_haproxy_accepts_the_generated_config(records, tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    haproxy = containers(records("local"))["automata-local-haproxy"]
    rate_map = tmp_path / "rate_limits.map"
    rate_map.write_text(upload(haproxy, local.CONFIG_PATHS["haproxy-map"]))
    cfg.write_text(upload(haproxy).replace(local.CONFIG_PATHS["haproxy-map"], str(rate_map)))
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_promtool_accepts_the_generated_prometheus_config_and_rules(records, tmp_path):
    prometheus = containers(records("local"))["automata-local-prometheus"]
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(upload(prometheus, local.CONFIG_PATHS["prometheus-rules"]))
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(upload(prometheus).replace(local.CONFIG_PATHS["prometheus-rules"], str(rule_file)))
    result = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules.ALERTS)} rules found" in result.stdout


def test_prometheus_scrapes_nginx_through_its_exporter(records):
    recs = records("local")
    exporter = containers(recs)["automata-local-nginx-exporter"]
    scrape_uri = next(a for a in exporter["command"] if a.startswith("--nginx.scrape-uri="))
    assert scrape_uri == f"--nginx.scrape-uri=http://nginx:{local.NGINX_STATUS_PORT}/stub_status"
    assert "ports" not in exporter
    assert f"listen {local.NGINX_STATUS_PORT};" in upload(containers(recs)["automata-local-nginx"])
    jobs = {j["job_name"]: j for j in yaml.safe_load(upload(containers(recs)["automata-local-prometheus"]))["scrape_configs"]}
    assert jobs["nginx"]["static_configs"][0]["targets"] == [f"nginx-exporter:{local.NGINX_EXPORTER_PORT}"]


def test_grafana_provisions_the_committed_dashboard(records):
    grafana = containers(records("local"))["automata-local-grafana"]
    assert upload(grafana, local.CONFIG_PATHS["grafana-dashboard-json"]) == DASHBOARD_JSON.read_text()
    provider = yaml.safe_load(upload(grafana, local.CONFIG_PATHS["grafana-dashboards"]))["providers"][0]
    assert local.CONFIG_PATHS["grafana-dashboard-json"].startswith(provider["options"]["path"] + "/")
