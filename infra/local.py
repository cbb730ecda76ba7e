"""The `local` stack: a Compose-style environment for one machine, on a Docker or
Podman host (pulumi-docker), with the same backend image as the cluster.

Ports follow docs/lab.md and are published on 127.0.0.1 only.  The proxy
configs carry the traffic policy (traffic/policy.yml) rendered by the tier
adapters (automata_lb/tiers.py), the renderers of the edge roles, so routes, limits, timeouts, retries, canary and
headers behave as on the edge; tuning, TLS and logs stay the roles' job.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
import yaml

from automata_lb.tiers import HAPROXY, NGINX
from infra import naming
from infra.settings import ImageSettings, LocalSettings
from monitoring import dashboard, rules
from traffic.model import Policy

LOOPBACK = "127.0.0.1"
# host port: (container, container port) -- docs/lab.md's map
PUBLISHED = {
    "nginx": ((8080, 80),),
    "haproxy": ((8000, 8000), (8404, 8404)),
    "prometheus": ((9090, 9090),),
    "grafana": ((3000, 3000),),
}
CONFIG_PATHS = {
    "nginx": "/etc/nginx/nginx.conf",
    "nginx-proxy-params": "/etc/nginx/proxy_params",
    "haproxy": "/usr/local/etc/haproxy/haproxy.cfg",
    "haproxy-map": "/usr/local/etc/haproxy/rate_limits.map",
    "prometheus": "/etc/prometheus/prometheus.yml",
    "prometheus-rules": "/etc/prometheus/automata-lb.rules.yml",
    "grafana": "/etc/grafana/provisioning/datasources/prometheus.yaml",
    "grafana-dashboards": "/etc/grafana/provisioning/dashboards/automata.yaml",
    "grafana-dashboard-json": "/var/lib/grafana/dashboards/load-balancer-dashboard.json",
}
# NGINX's stub_status, on the local network only, for the exporter.
NGINX_STATUS_PORT = 8090
NGINX_EXPORTER_PORT = 9113
NETWORK = "automata-local"
GRACE_PERIOD = 30  # seconds a stopped backend container drains


@dataclass(frozen=True)
class Backend:
    name: str
    track: naming.Track
    image: str


def backends(images: ImageSettings, local: LocalSettings) -> list[Backend]:
    stable = [Backend(f"backend-{i}", "stable", images.stable) for i in range(1, local.backends + 1)]
    canary = [Backend("canary-1", "canary", images.canary)] if images.canary else []
    return stable + canary


def _indent(text: str, by: int) -> str:
    return "\n".join((" " * by + line) if line else line for line in text.splitlines())


def _servers(pool: list[Backend], track: str) -> list[tuple[str, str, int]]:
    """(name, host, port): the container engine's DNS resolves each container's name."""
    return [(b.name, b.name, naming.CONTAINER_PORT) for b in pool if b.track == track]


# What the role's proxy_params carries, for the image that has none.
NGINX_PROXY_PARAMS = """proxy_http_version 1.1;
proxy_set_header Host $host;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $lb_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Request-ID $lb_request_id;
"""


def nginx_conf(pool: list[Backend], policy: Policy) -> str:
    """The local NGINX: the traffic policy's blocks (NGINX's adapter), plain
    HTTP (the local stack has no certificates: TLS and HSTS are not rendered)."""
    r = NGINX.render(policy, _servers(pool, "stable"), _servers(pool, "canary"))
    return f"""worker_processes auto;
events {{ worker_connections 4096; }}
http {{
    map $http_x_request_id $lb_request_id {{
        default $request_id;
        "~^[A-Za-z0-9._:-]{{8,128}}$" $http_x_request_id;
    }}
    map $http_upgrade $lb_connection_upgrade {{
        default upgrade;
        "" "";
    }}
{r.http}
{_indent(r.canary, 4)}
{_indent(r.upstreams, 4)}

    server {{
        listen 80;
    {_indent(r.headers, 4).lstrip()}
{_indent(r.health, 8)}
{_indent(r.routes, 8)}
        location / {{
            return 404;
        }}
    }}

    server {{
        listen {NGINX_STATUS_PORT};
        location = /stub_status {{
            stub_status;
        }}
    }}
}}
"""


def haproxy_cfg(pool: list[Backend], policy: Policy) -> str:
    """The local HAProxy: the traffic policy's blocks (HAProxy's adapter),
    plain HTTP, names resolved by the container engine's DNS."""
    r = HAPROXY.render(policy, _servers(pool, "stable"), _servers(pool, "canary"),
                       HAPROXY.renderer.Options(check_path=naming.LIVENESS_PATH, rate_map=CONFIG_PATHS["haproxy-map"]))
    return f"""global
    maxconn 40000
{r.global_tls}
{r.global_vars}
defaults
    mode http
    timeout client 60s
{r.defaults}
    # Backends may start after HAProxy; resolve their names when they appear.
    # resolv.conf points at Docker's or Podman's own DNS, whichever runs us.
    default-server check init-addr last,libc,none resolvers engine
resolvers engine
    parse-resolv-conf

{r.tables}
frontend main
    bind :8000
{r.frontend}

{r.backends}
frontend stats
    bind :8404
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /haproxy-stats
"""


def prometheus_yml(pool: list[Backend]) -> str:
    """Every tier, labelled as on the lab (instance = container name, backends
    with their version), and the alert rules of monitoring/alerts.yml."""
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [CONFIG_PATHS["prometheus-rules"]],
        "scrape_configs": [
            {"job_name": "backend", "metrics_path": naming.METRICS_PATH,
             "static_configs": [{"targets": [f"{b.name}:{naming.CONTAINER_PORT}"],
                                 "labels": {"instance": b.name, "version": b.track}} for b in pool]},
            {"job_name": "haproxy", "static_configs": [{"targets": ["haproxy:8404"], "labels": {"instance": "haproxy"}}]},
            {"job_name": "nginx", "static_configs": [{"targets": [f"nginx-exporter:{NGINX_EXPORTER_PORT}"],
                                                      "labels": {"instance": "nginx"}}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alert_rules_yml() -> str:
    return yaml.safe_dump(rules.rule_groups(rules.load()), sort_keys=False, width=200)


def endpoints() -> dict[str, str]:
    """What a developer opens: every published port, on loopback."""
    urls = {f"{svc}:{outer}": f"http://{LOOPBACK}:{outer}" for svc, ports in PUBLISHED.items() for outer, _ in ports}
    urls["haproxy:8404"] += "/haproxy-stats"
    return urls


GRAFANA_DATASOURCE = """apiVersion: 1
datasources:
  - {name: Prometheus, type: prometheus, access: proxy, url: "http://prometheus:9090", isDefault: true}
"""
# Grafana loads every dashboard file of this folder at start.
GRAFANA_DASHBOARDS = """apiVersion: 1
providers:
  - {name: automata, folder: Automata, type: file, options: {path: /var/lib/grafana/dashboards}}
"""


@dataclass(frozen=True)
class LocalEnvironmentArgs:
    images: ImageSettings
    local: LocalSettings
    policy: Policy


class LocalEnvironment(pulumi.ComponentResource):
    def __init__(self, name: str, args: LocalEnvironmentArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:local:Environment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.network = docker.Network(f"{name}-network", name=NETWORK, opts=child)
        pool = backends(args.images, args.local)
        pulled: dict[str, docker.RemoteImage] = {}

        def image(ref: str) -> pulumi.Output[str]:
            # Containers take the pulled image's name (not its id, which only
            # the provider knows) and depend on the pull through the Output.
            if ref not in pulled:
                pulled[ref] = docker.RemoteImage(f"{name}-image-{len(pulled)}", name=ref, keep_locally=True, opts=child)
            return pulled[ref].name

        def container(cname: str, ref: str, **kwargs) -> docker.Container:
            return docker.Container(
                f"{name}-{cname}",
                name=f"{NETWORK}-{cname}",
                image=image(ref),
                restart="unless-stopped",
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[cname])],
                opts=child,
                **kwargs,
            )

        self.backends = [
            container(
                b.name, b.image,
                command=naming.backend_args(b.name, b.track, GRACE_PERIOD),
                # Docker's default stop timeout (10s) would cut the drain short.
                stop_timeout=GRACE_PERIOD + 5,
                # Same hardening as the pods: non-root, read-only root, no privilege gain.
                user="10001", read_only=True, tmpfs={"/tmp": "size=64m"},
                security_opts=["no-new-privileges:true"],
                capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"]),
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=["CMD", "python", "-c",
                           f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{naming.CONTAINER_PORT}{naming.LIVENESS_PATH}')"],
                    interval="10s", timeout="2s", retries=3,
                ),
            )
            for b in pool
        ]
        configs = {
            "nginx": nginx_conf(pool, args.policy),
            "nginx-proxy-params": NGINX_PROXY_PARAMS,
            "haproxy": haproxy_cfg(pool, args.policy),
            "haproxy-map": HAPROXY.rate_map(args.policy),
            "prometheus": prometheus_yml(pool),
            "prometheus-rules": alert_rules_yml(),
            "grafana": GRAFANA_DATASOURCE,
            "grafana-dashboards": GRAFANA_DASHBOARDS,
            "grafana-dashboard-json": dashboard.render(),
        }
        refs = {"nginx": args.local.nginx_image, "haproxy": args.local.haproxy_image,
                "prometheus": args.local.prometheus_image, "grafana": args.local.grafana_image}
        self.services = {
            svc: container(
                svc, refs[svc],
                ports=[docker.ContainerPortArgs(internal=inner, external=outer, ip=LOOPBACK) for outer, inner in PUBLISHED[svc]],
                uploads=[docker.ContainerUploadArgs(file=CONFIG_PATHS[name], content=configs[name])
                         for name in CONFIG_PATHS if name.split("-")[0] == svc],
            )
            for svc in PUBLISHED
        }
        # Reads NGINX's stub_status over the local network; published nowhere.
        self.nginx_exporter = container(
            "nginx-exporter", args.local.nginx_exporter_image,
            command=[f"--nginx.scrape-uri=http://nginx:{NGINX_STATUS_PORT}/stub_status",
                     f"--web.listen-address=:{NGINX_EXPORTER_PORT}"],
        )
        self.endpoints = endpoints()
        self.register_outputs({"endpoints": self.endpoints})
