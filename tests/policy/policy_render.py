"""Rendering helpers of the policy tests (importable by name; conftest.py
only holds fixtures, as in tests/lab)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from bench.render import render_role
from infra import offline

SERVERS = [{"name": "backend-1", "address": "10.77.7.21", "port": 8000},
           {"name": "backend-2", "address": "10.77.7.22", "port": 8000}]
CANARY = [{"name": "canary-1", "address": "10.77.7.31", "port": 8000}]
PKI = Path(__file__).resolve().parents[2] / ".lab" / "pki"


@dataclass
class Edge:
    nginx_conf: Path
    haproxy_cfg: str
    rate_map: str


def render_edge(dest: Path, overrides: dict) -> Edge:
    """Both edge roles, rendered from the policy with `overrides`, as the
    edge playbook would write them (TLS on when a certificate is at hand)."""
    tls = (PKI / "server.pem").exists()
    common = {"traffic_policy_overrides": overrides}
    render_role("nginx_lb", dest / "nginx", common | {
        "nginx_lb_manage_service": False, "nginx_lb_conf_dir": str(dest / "nginx"),
        "nginx_lb_pid_file": str(dest / "nginx" / "nginx.pid"), "nginx_lb_log_dir": str(dest / "nginx" / "logs"),
        "nginx_lb_tls_enabled": tls, "nginx_lb_tls_certificate": str(PKI / "server.pem") if tls else "",
        "nginx_lb_tls_key": str(PKI / "server.key") if tls else "", "nginx_lb_worker_rlimit_nofile": 20000,
        "nginx_lb_servers": SERVERS, "nginx_lb_canary_servers": CANARY})
    render_role("haproxy_lb", dest / "haproxy", common | {
        "haproxy_lb_manage_service": False, "haproxy_lb_config_dir": str(dest / "haproxy"), "haproxy_lb_chroot": "",
        "haproxy_lb_admin_socket": str(dest / "haproxy" / "admin.sock"), "haproxy_lb_nofile": 20000,
        "haproxy_lb_stats_bind_address": "127.0.0.1", "haproxy_lb_stats_password": secrets.token_urlsafe(18),
        "haproxy_lb_stable_servers": SERVERS, "haproxy_lb_canary_servers": CANARY})
    haproxy_dir = dest / "haproxy"
    (rate_map,) = (haproxy_dir / "maps").glob("rate_limits.*.map")
    return Edge(dest / "nginx" / "nginx.conf", (haproxy_dir / "haproxy.cfg").read_text(), rate_map.read_text())


def mesh_objects(overrides: dict) -> list[dict]:
    records = offline.run("prod", {"trafficPolicy": overrides} if overrides else None)
    return [{"apiVersion": r.inputs["apiVersion"], "kind": r.inputs["kind"], "spec": offline.plain(r.inputs["spec"])}
            for r in records if ".istio.io/" in r.type]


def local_configs(overrides: dict, tmp: Path) -> tuple[Path, str, str]:
    from infra import local
    records = offline.run("local", {"trafficPolicy": overrides, "canaryImage": "ghcr.io/automata/backend:1.1.0"})
    containers = {r.inputs["name"]: r.inputs for r in records if r.type == "docker:index/container:Container"}
    files = {u["file"]: u["content"] for svc in ("nginx", "haproxy")
             for u in containers[f"automata-local-{svc}"]["uploads"]}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "nginx.conf").write_text(files[local.CONFIG_PATHS["nginx"]])
    (tmp / "proxy_params").write_text(files[local.CONFIG_PATHS["nginx-proxy-params"]])
    return tmp / "nginx.conf", files[local.CONFIG_PATHS["haproxy"]], files[local.CONFIG_PATHS["haproxy-map"]]
