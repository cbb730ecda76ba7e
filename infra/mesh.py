"""The Istio objects of the backend namespace: edge Gateway, VirtualService,
DestinationRules, mTLS, JWT, authorization and telemetry (docs/mesh.md).

Specs are built by pure functions from the typed settings, the traffic policy
(traffic/policy.yml through traffic/istio.py: the same model the edge load
balancers render) and infra/naming.py, so the routes always name the Services
and `version` subsets the workloads create; the component only registers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.mesh_install import TRACING_PROVIDER
from infra.naming import Track
from infra.settings import MeshSettings, RolloutSettings, WorkloadSettings
from traffic import istio
from traffic.model import Policy, TrafficClass

NETWORKING = "networking.istio.io/v1"
SECURITY = "security.istio.io/v1"
TELEMETRY = "telemetry.istio.io/v1"

# Keepalive probes keep NAT and cloud load balancers from dropping silent WebSockets.
WEBSOCKET_KEEPALIVE = {"time": "300s", "interval": "60s", "probes": 3}
# Classes reachable without a token (logins); every other class needs a valid JWT.
PUBLIC_CLASSES = ("auth",)


def seconds(value: int) -> str:
    return f"{value}s"


@dataclass(frozen=True)
class MeshArgs:
    namespace: pulumi.Input[str]
    namespace_name: str  # the same, as a plain string for hosts and principals
    mesh: MeshSettings
    monitoring_namespace: str  # its Prometheus may scrape the backend
    tracks: tuple[Track, ...]
    stack: str
    # Routes, balancing, timeouts, retries, canary/A-B, TLS and headers
    # (traffic/policy.yml, rendered by traffic/istio.py).
    policy: Policy

    @property
    def canary(self) -> bool:
        return "canary" in self.tracks

    def host(self, workload: str) -> str:
        return naming.service_host(workload, self.namespace_name)


def route_name(cls: TrafficClass, path: str) -> str:
    return cls.name if len(cls.paths) == 1 else f"{cls.name}-{cls.paths.index(path)}"


# --- traffic ------------------------------------------------------------------

def gateway_spec(args: MeshArgs) -> dict:
    hosts = list(args.mesh.hosts)
    tls = args.policy.tls
    return {
        "selector": naming.GATEWAY_SELECTOR,
        "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": hosts,
             "tls": {"mode": "SIMPLE", "credentialName": args.mesh.tls_secret,
                     "minProtocolVersion": tls.min_version.replace("TLSv1.", "TLSV1_"),
                     "cipherSuites": list(tls.ciphers)}},
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts,
             "tls": {"httpsRedirect": True}},
        ],
    }


def destination(args: MeshArgs, cls: TrafficClass, track: Track, weight: int) -> dict:
    return {"destination": {"host": args.host(cls.workload),
                            "subset": naming.subset_name(track, istio.variant(args.policy, cls)),
                            "port": {"number": naming.SERVICE_PORT}},
            "weight": weight}


def http_routes(args: MeshArgs) -> list[dict]:
    """Per class path, longest first (the prefix NGINX and HAProxy pick): for a
    canary class first the A/B route (header or cookie -> canary), then the
    weighted split.  Without a canary track, everything goes to stable."""
    policy = args.policy
    routes = []
    for path, cls in policy.routes():
        name = route_name(cls, path)
        common = {"timeout": istio.route_timeout(cls), "retries": istio.retries(cls),
                  "headers": istio.response_headers(policy)}
        if args.canary and cls.canary:
            routes.append({"name": f"{name}-ab", "match": istio.ab_matches(policy, path),
                           "route": [destination(args, cls, "canary", 100)], **common})
            share = policy.canary.share
            split = [destination(args, cls, "stable", 100 - share), destination(args, cls, "canary", share)]
        else:
            split = [destination(args, cls, "stable", 100)]
        routes.append({"name": name, "match": istio.uri_matches(path), "route": split, **common})
    return routes


def virtual_service_spec(args: MeshArgs) -> dict:
    return {
        "hosts": list(args.mesh.hosts),
        "gateways": [f"{args.namespace_name}/{naming.GATEWAY_NAME}"],
        "http": http_routes(args),
    }


def connection_pool(args: MeshArgs, cls: TrafficClass | None) -> dict:
    cb = args.mesh.circuit_breaker
    tcp, http = istio.connection_settings(cls)
    tcp = {"maxConnections": cb.max_connections, **tcp}
    http = {"http1MaxPendingRequests": cb.max_pending_requests, "http2MaxRequests": cb.max_requests, **http}
    if cls is not None and cls.websocket:
        tcp["tcpKeepalive"] = WEBSOCKET_KEEPALIVE
    return {"tcp": tcp, "http": http}


def outlier_detection(mesh: MeshSettings) -> dict:
    cb = mesh.circuit_breaker
    return {"consecutive5xxErrors": cb.consecutive_5xx, "interval": seconds(cb.interval),
            "baseEjectionTime": seconds(cb.base_ejection_time), "maxEjectionPercent": cb.max_ejection_percent}


def subsets(args: MeshArgs, workload: str) -> list[dict]:
    """A subset per track, and per track again for each class of the workload
    that balances or times out differently (a DestinationRule sets those per
    subset, not per route): `compute-stable`, `auth-canary`, ..."""
    result = []
    for variant, cls in istio.variants(args.policy, workload):
        for track in args.tracks:
            # The Deployment's own selector, whose `version` label tells the tracks apart.
            subset = {"name": naming.subset_name(track, variant),
                      "labels": naming.track_selector_labels(workload, track)}
            if variant:
                subset["trafficPolicy"] = {"loadBalancer": istio.load_balancer(cls),
                                           "connectionPool": connection_pool(args, cls)}
            result.append(subset)
    return result


def destination_rule_spec(args: MeshArgs, workload: str) -> dict:
    primary = istio.primary_class(args.policy, workload)
    return {
        "host": args.host(workload),
        "trafficPolicy": {
            "loadBalancer": istio.load_balancer(primary) if primary else {"simple": "ROUND_ROBIN"},
            "connectionPool": connection_pool(args, primary),
            "outlierDetection": outlier_detection(args.mesh),
            "tls": {"mode": "ISTIO_MUTUAL"},
        },
        "subsets": subsets(args, workload),
    }


# --- security -----------------------------------------------------------------

def gateway_principal(mesh: MeshSettings) -> str:
    return naming.service_account_principal(mesh.gateway_namespace, naming.GATEWAY_RELEASE)


def request_authentication_spec(mesh: MeshSettings) -> dict:
    # No selector: every sidecar of the namespace checks tokens.  A request
    # with an invalid token is refused here; one without a token passes on to
    # the authorization policies, which require it on protected paths.
    return {"jwtRules": [{"issuer": mesh.jwt.issuer, "jwksUri": mesh.jwt.jwks_uri,
                          "audiences": list(mesh.jwt.audiences)}]}


def authorization_policy_specs(mesh: MeshSettings, policy: Policy, monitoring_namespace: str) -> dict[str, dict]:
    """An empty spec allows nothing: everything not allowed below is denied."""
    gateway = [gateway_principal(mesh)]

    def paths(protected: bool) -> list[str]:
        # "/api/*": Istio's prefix match, the same prefix the routes use.
        return [path + "*" for path, cls in policy.routes() if (cls.name not in PUBLIC_CLASSES) == protected]

    return {
        "deny-by-default": {},
        "allow-gateway-public": {"action": "ALLOW", "rules": [{
            "from": [{"source": {"principals": gateway}}],
            "to": [{"operation": {"paths": paths(protected=False)}}]}]},
        "allow-gateway-authenticated": {"action": "ALLOW", "rules": [{
            # One source: the gateway's mTLS identity AND a token from our issuer.
            "from": [{"source": {"principals": gateway, "requestPrincipals": [f"{mesh.jwt.issuer}/*"]}}],
            "to": [{"operation": {"paths": paths(protected=True)}}]}]},
        "allow-monitoring": {"action": "ALLOW", "rules": [{
            "from": [{"source": {"namespaces": [monitoring_namespace]}}],
            "to": [{"operation": {"methods": ["GET"],
                                  "paths": [naming.METRICS_PATH, naming.METRICS_PATH + "/*",
                                            naming.READINESS_PATH, naming.READINESS_PATH + "/*"]}}]}]},
    }


# --- telemetry ----------------------------------------------------------------

def telemetry_spec(mesh: MeshSettings, stack: str, selector: dict | None = None) -> dict:
    spec = {
        "tracing": [{"providers": [{"name": TRACING_PROVIDER}],
                     "randomSamplingPercentage": mesh.tracing.sampling,
                     "customTags": {"automata.stack": {"literal": {"value": stack}}}}],
        # "envoy" is Istio's built-in stdout access log provider.
        "accessLogging": [{"providers": [{"name": "envoy"}]}],
        # Standard labels already split by destination service and version
        # (stable/canary) and carry response_flags (UO: pool overflow, UH: no
        # healthy pod) for the circuit breaker; add the host and method.
        "metrics": [{"providers": [{"name": "prometheus"}], "overrides": [{
            "match": {"metric": "ALL_METRICS", "mode": "CLIENT_AND_SERVER"},
            "tagOverrides": {"request_host": {"value": "request.host"},
                             "request_method": {"value": "request.method"}}}]}],
    }
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return spec


def pod_annotations(workload: WorkloadSettings, rollout: RolloutSettings) -> dict[str, str]:
    """The sidecar must outlive the backend's drain: Istio's default 5 s
    terminationDrainDuration would cut WebSockets and AI calls that the backend
    is still finishing during a rollout.  The app also waits for its proxy."""
    proxy = {"terminationDrainDuration": seconds(rollout.drain_seconds(workload)),
             "holdApplicationUntilProxyStarts": True}
    return {"proxy.istio.io/config": json.dumps(proxy, sort_keys=True)}


class ServiceMesh(pulumi.ComponentResource):
    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("automata:mesh:ServiceMesh", name, None, opts)
        mesh = args.mesh

        def custom(resource_name: str, api_version: str, kind: str, object_name: str, spec: dict,
                   namespace: pulumi.Input[str] = args.namespace) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{resource_name}", api_version=api_version, kind=kind,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=namespace,
                                                    labels={"app.kubernetes.io/part-of": naming.PART_OF,
                                                            "app.kubernetes.io/managed-by": naming.MANAGED_BY}),
                spec=spec, opts=pulumi.ResourceOptions(parent=self))

        self.gateway = custom("gateway", NETWORKING, "Gateway", naming.GATEWAY_NAME, gateway_spec(args))
        self.virtual_service = custom("vs", NETWORKING, "VirtualService", naming.VIRTUAL_SERVICE_NAME,
                                      virtual_service_spec(args))
        self.destination_rules = {
            workload: custom(f"{workload}-dr", NETWORKING, "DestinationRule", naming.workload_name(workload),
                             destination_rule_spec(args, workload))
            for workload in naming.TRAFFIC_CLASSES
        }
        custom("mtls", SECURITY, "PeerAuthentication", "default", {"mtls": {"mode": mesh.mtls_mode}})
        custom("jwt", SECURITY, "RequestAuthentication", "jwt", request_authentication_spec(mesh))
        for name_, spec in authorization_policy_specs(mesh, args.policy, args.monitoring_namespace).items():
            custom(name_, SECURITY, "AuthorizationPolicy", name_, spec)
        custom("telemetry", TELEMETRY, "Telemetry", "automata", telemetry_spec(mesh, args.stack))
        # Sampling is decided where a trace starts, at the gateway, so it gets
        # the same Telemetry in its own namespace.
        custom("gateway-telemetry", TELEMETRY, "Telemetry", "automata-gateway",
               telemetry_spec(mesh, args.stack, naming.GATEWAY_SELECTOR), namespace=mesh.gateway_namespace)
        self.register_outputs({"hosts": list(mesh.hosts)})
