"""The `local` stack: the spec's Docker Compose environment on a Docker or
Podman host (pulumi-docker), with the same backend image as the cluster.

Ports follow docs/lab.md and are published on 127.0.0.1 only.  The proxy
configs are deliberately small: the production edge configuration is the
Ansible roles' job; this is a developer loop with the same routes
(/ws sticky, /ai with long timeouts, everything else least-connections).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra import naming
from infra.settings import ImageSettings, LocalSettings

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
    "haproxy": "/usr/local/etc/haproxy/haproxy.cfg",
    "prometheus": "/etc/prometheus/prometheus.yml",
    "grafana": "/etc/grafana/provisioning/datasources/prometheus.yaml",
}
NETWORK = "automata-local"
GRACE_PERIOD = 30  # seconds a stopped backend container drains
AI_TIMEOUT = 300  # seconds, the spec's AI pool with longer timeouts


@dataclass(frozen=True)
class Backend:
    name: str
    track: naming.Track
    image: str


def backends(images: ImageSettings, local: LocalSettings) -> list[Backend]:
    stable = [Backend(f"backend-{i}", "stable", images.stable) for i in range(1, local.backends + 1)]
    canary = [Backend("canary-1", "canary", images.canary)] if images.canary else []
    return stable + canary


def nginx_conf(pool: list[Backend]) -> str:
    servers = "".join(f"        server {b.name}:{naming.CONTAINER_PORT} max_fails=3 fail_timeout=10s;\n" for b in pool)
    return f"""worker_processes auto;
events {{ worker_connections 4096; }}
http {{
    upstream api {{
        least_conn;
{servers}    }}
    upstream websocket {{
        hash $remote_addr consistent;
{servers}    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    server {{
        listen 80;
        location /ws {{
            proxy_pass http://websocket;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
        location /ai {{
            proxy_pass http://api;
            proxy_read_timeout {AI_TIMEOUT}s;
        }}
        location / {{
            proxy_pass http://api;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def haproxy_cfg(pool: list[Backend]) -> str:
    servers = "".join(
        f"    server {b.name} {b.name}:{naming.CONTAINER_PORT} check{' weight 10' if b.track == 'canary' else ''}\n"
        for b in pool
    )
    return f"""global
    maxconn 40000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 3600s
    # Backends may start after HAProxy; resolve their names when they appear.
    # resolv.conf points at Docker's or Podman's own DNS, whichever runs us.
    default-server init-addr last,libc,none resolvers engine
resolvers engine
    parse-resolv-conf
frontend main
    bind :8000
    acl is_ws path_beg /ws
    use_backend websocket if is_ws
    default_backend api
frontend stats
    bind :8404
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /haproxy-stats
backend api
    balance leastconn
    option httpchk GET {naming.LIVENESS_PATH}
{servers}backend websocket
    balance source
    option httpchk GET {naming.LIVENESS_PATH}
{servers}"""


def prometheus_yml(pool: list[Backend]) -> str:
    targets = ", ".join(f'"{b.name}:{naming.CONTAINER_PORT}"' for b in pool)
    return f"""global: {{scrape_interval: 15s}}
scrape_configs:
  - job_name: backend
    metrics_path: {naming.METRICS_PATH}
    static_configs: [{{targets: [{targets}]}}]
  - job_name: haproxy
    static_configs: [{{targets: ["haproxy:8404"]}}]
"""


def endpoints() -> dict[str, str]:
    """What a developer opens: every published port, on loopback."""
    urls = {f"{svc}:{outer}": f"http://{LOOPBACK}:{outer}" for svc, ports in PUBLISHED.items() for outer, _ in ports}
    urls["haproxy:8404"] += "/haproxy-stats"
    return urls


GRAFANA_DATASOURCE = """apiVersion: 1
datasources:
  - {name: Prometheus, type: prometheus, access: proxy, url: "http://prometheus:9090", isDefault: true}
"""


@dataclass(frozen=True)
class LocalEnvironmentArgs:
    images: ImageSettings
    local: LocalSettings


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
            "nginx": nginx_conf(pool),
            "haproxy": haproxy_cfg(pool),
            "prometheus": prometheus_yml(pool),
            "grafana": GRAFANA_DATASOURCE,
        }
        refs = {"nginx": args.local.nginx_image, "haproxy": args.local.haproxy_image,
                "prometheus": args.local.prometheus_image, "grafana": args.local.grafana_image}
        self.services = {
            svc: container(
                svc, refs[svc],
                ports=[docker.ContainerPortArgs(internal=inner, external=outer, ip=LOOPBACK) for outer, inner in PUBLISHED[svc]],
                uploads=[docker.ContainerUploadArgs(file=CONFIG_PATHS[svc], content=configs[svc])],
            )
            for svc in PUBLISHED
        }
        self.endpoints = endpoints()
        self.register_outputs({"endpoints": self.endpoints})
