"""The Istio objects of the backend namespace: edge Gateway, VirtualService,
DestinationRules, mTLS, JWT, authorization and telemetry (docs/mesh.md).

Specs are built by pure functions from the typed settings and infra/naming.py,
so the routes always name the Services and `version` subsets the workloads
create; the component only registers them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import naming
from infra.mesh_install import TRACING_PROVIDER
from infra.naming import Track
from infra.settings import MeshSettings, RolloutSettings, WorkloadSettings

NETWORKING = "networking.istio.io/v1"
SECURITY = "security.istio.io/v1"
TELEMETRY = "telemetry.istio.io/v1"

# Retried only when the request never reached a backend (no connection, or
# refused before any byte was processed), so a retried POST cannot run twice.
SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request"
AB_VALUE = "canary"  # the header/cookie value that selects the canary
CONNECT_TIMEOUT = "5s"
# Keepalive probes keep NAT and cloud load balancers from dropping silent WebSockets.
WEBSOCKET_KEEPALIVE = {"time": "300s", "interval": "60s", "probes": 3}
WEBSOCKET_AFFINITY_COOKIE = "automata-ws"
# Spec TLS policy: 1.2 and 1.3 only; for 1.2 forward-secret AEAD suites only.
TLS_CIPHERS = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]


@dataclass(frozen=True)
class Route:
    """One public path and how the mesh treats it."""

    path: str
    traffic_class: str
    # Subset variant: /auth is served by the API pods but balanced by least
    # request (the spec's leastconn for auth), so it has subsets of its own.
    variant: str
    protected: bool  # needs a valid JWT
    retried: bool  # see SAFE_RETRY_ON; streams and AI calls are never replayed

    @property
    def name(self) -> str:
        return self.path.strip("/")

    def uri_matches(self) -> list[dict]:
        # /api and /api/... but not /apiary.
        return [{"uri": {"exact": self.path}}, {"uri": {"prefix": self.path + "/"}}]

    def auth_paths(self) -> list[str]:
        return [self.path, self.path + "/*"]


ROUTES = (
    Route("/api", "api", "", protected=True, retried=True),
    Route("/auth", "api", "auth", protected=False, retried=True),
    Route("/ws", "websocket", "", protected=True, retried=False),
    Route("/ai", "ai", "", protected=True, retried=False),
)

# Load balancing per class (spec: round robin for the API, least connections
# for auth and AI, WebSocket clients stay on one backend).
LEAST_REQUEST = {"simple": "LEAST_REQUEST"}
LOAD_BALANCER = {
    "api": {"simple": "ROUND_ROBIN"},
    "ai": LEAST_REQUEST,
    # A session cookie (ttl 0s) the proxy sets on the first response, scoped to /ws.
    "websocket": {"consistentHash": {"httpCookie": {"name": WEBSOCKET_AFFINITY_COOKIE, "path": "/ws", "ttl": "0s"}}},
}
VARIANT_LOAD_BALANCER = {"auth": LEAST_REQUEST}


def seconds(value: int) -> str:
    return f"{value}s"


@dataclass(frozen=True)
class MeshArgs:
    namespace: pulumi.Input[str]
    namespace_name: str  # the same, as a plain string for hosts and principals
    mesh: MeshSettings
    workloads: tuple[WorkloadSettings, ...]
    tracks: tuple[Track, ...]
    stack: str

    def workload(self, traffic_class: str) -> WorkloadSettings:
        return next(w for w in self.workloads if w.traffic_class == traffic_class)

    @property
    def canary(self) -> bool:
        return "canary" in self.tracks

    def host(self, traffic_class: str) -> str:
        return naming.service_host(traffic_class, self.namespace_name)


# --- traffic ------------------------------------------------------------------

def gateway_spec(args: MeshArgs) -> dict:
    hosts = list(args.mesh.hosts)
    return {
        "selector": naming.GATEWAY_SELECTOR,
        "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": hosts,
             "tls": {"mode": "SIMPLE", "credentialName": args.mesh.tls_secret, "minProtocolVersion": "TLSV1_2",
                     "cipherSuites": TLS_CIPHERS}},
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts,
             "tls": {"httpsRedirect": True}},
        ],
    }


def route_timeout(args: MeshArgs, route: Route) -> str:
    """The whole request's budget at the edge.  API and AI get the class's
    request timeout (AI: 300 s, so slow completions finish); WebSocket none
    (0s disables it), or every upgraded connection would be cut at the limit."""
    timeout = args.workload(route.traffic_class).request_timeout
    return seconds(timeout) if timeout is not None else "0s"


def retries(args: MeshArgs, route: Route) -> dict:
    # Istio retries twice by default, including on 503; say "no" explicitly.
    if not route.retried or args.mesh.retry_attempts == 0:
        return {"attempts": 0}
    # The per-try budget is the whole timeout: a slow request is never cut and
    # replayed, only a connection failure is retried.
    return {"attempts": args.mesh.retry_attempts, "perTryTimeout": route_timeout(args, route), "retryOn": SAFE_RETRY_ON}


def destination(args: MeshArgs, route: Route, track: Track, weight: int) -> dict:
    return {"destination": {"host": args.host(route.traffic_class), "subset": naming.subset_name(track, route.variant),
                            "port": {"number": naming.SERVICE_PORT}},
            "weight": weight}


def ab_matches(args: MeshArgs, route: Route) -> list[dict]:
    cookie = f"^(.*;\\s*)?{re.escape(args.mesh.ab_cookie)}={AB_VALUE}(;.*)?$"
    selectors = [{args.mesh.ab_header: {"exact": AB_VALUE}}, {"cookie": {"regex": cookie}}]
    return [{**match, "headers": headers} for headers in selectors for match in route.uri_matches()]


def http_routes(args: MeshArgs) -> list[dict]:
    """Per path: first the A/B route (header or cookie -> canary), then the
    weighted split.  Without a canary track, everything goes to stable."""
    routes = []
    for route in ROUTES:
        common = {"timeout": route_timeout(args, route), "retries": retries(args, route)}
        if args.canary:
            routes.append({"name": f"{route.name}-ab", "match": ab_matches(args, route),
                           "route": [destination(args, route, "canary", 100)], **common})
            weight = args.mesh.canary_weight
            split = [destination(args, route, "stable", 100 - weight), destination(args, route, "canary", weight)]
        else:
            split = [destination(args, route, "stable", 100)]
        routes.append({"name": route.name, "match": route.uri_matches(), "route": split, **common})
    return routes


def virtual_service_spec(args: MeshArgs) -> dict:
    return {
        "hosts": list(args.mesh.hosts),
        "gateways": [f"{args.namespace_name}/{naming.GATEWAY_NAME}"],
        "http": http_routes(args),
    }


def connection_pool(args: MeshArgs, traffic_class: str) -> dict:
    cb = args.mesh.circuit_breaker
    tcp = {"maxConnections": cb.max_connections, "connectTimeout": CONNECT_TIMEOUT}
    http = {"http1MaxPendingRequests": cb.max_pending_requests, "http2MaxRequests": cb.max_requests}
    if traffic_class == "websocket":
        idle = seconds(args.mesh.websocket_idle_timeout)
        tcp |= {"tcpKeepalive": WEBSOCKET_KEEPALIVE, "idleTimeout": idle}
        http |= {"idleTimeout": idle}
    return {"tcp": tcp, "http": http}


def outlier_detection(mesh: MeshSettings) -> dict:
    cb = mesh.circuit_breaker
    return {"consecutive5xxErrors": cb.consecutive_5xx, "interval": seconds(cb.interval),
            "baseEjectionTime": seconds(cb.base_ejection_time), "maxEjectionPercent": cb.max_ejection_percent}


def subsets(args: MeshArgs, traffic_class: str) -> list[dict]:
    variants = {r.variant for r in ROUTES if r.traffic_class == traffic_class}
    result = []
    for variant in sorted(variants):
        for track in args.tracks:
            # The Deployment's own selector, whose `version` label tells the tracks apart.
            subset = {"name": naming.subset_name(track, variant),
                      "labels": naming.track_selector_labels(traffic_class, track)}
            if variant:
                subset["trafficPolicy"] = {"loadBalancer": VARIANT_LOAD_BALANCER[variant]}
            result.append(subset)
    return result


def destination_rule_spec(args: MeshArgs, traffic_class: str) -> dict:
    return {
        "host": args.host(traffic_class),
        "trafficPolicy": {
            "loadBalancer": LOAD_BALANCER[traffic_class],
            "connectionPool": connection_pool(args, traffic_class),
            "outlierDetection": outlier_detection(args.mesh),
            "tls": {"mode": "ISTIO_MUTUAL"},
        },
        "subsets": subsets(args, traffic_class),
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


def authorization_policy_specs(mesh: MeshSettings) -> dict[str, dict]:
    """An empty spec allows nothing: everything not allowed below is denied."""
    gateway = [gateway_principal(mesh)]

    def paths(protected: bool) -> list[str]:
        return [p for r in ROUTES if r.protected == protected for p in r.auth_paths()]

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
            "from": [{"source": {"namespaces": [mesh.monitoring_namespace]}}],
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
    proxy = {"terminationDrainDuration": seconds(workload.grace_period - rollout.pre_stop_seconds),
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
            cls: custom(f"{cls}-dr", NETWORKING, "DestinationRule", naming.workload_name(cls),
                        destination_rule_spec(args, cls))
            for cls in naming.TRAFFIC_CLASSES
        }
        custom("mtls", SECURITY, "PeerAuthentication", "default", {"mtls": {"mode": mesh.mtls_mode}})
        custom("jwt", SECURITY, "RequestAuthentication", "jwt", request_authentication_spec(mesh))
        for policy, spec in authorization_policy_specs(mesh).items():
            custom(policy, SECURITY, "AuthorizationPolicy", policy, spec)
        custom("telemetry", TELEMETRY, "Telemetry", "automata", telemetry_spec(mesh, args.stack))
        # Sampling is decided where a trace starts, at the gateway, so it gets
        # the same Telemetry in its own namespace.
        custom("gateway-telemetry", TELEMETRY, "Telemetry", "automata-gateway",
               telemetry_spec(mesh, args.stack, naming.GATEWAY_SELECTOR), namespace=mesh.gateway_namespace)
        self.register_outputs({"hosts": list(mesh.hosts)})
