"""Istio renderer: the policy's parts of the mesh objects (infra/mesh.py
registers them).  Pure functions of the model and plain names, so tests and
the drift check call them directly.

What the mesh cannot express is in `notes` (docs/traffic-policy.md lists
them): per-client rate limits and in-flight limits need an EnvoyFilter (no
stable schema to validate), trusted proxies are a hop count in the gateway's
mesh config, client idle/header timeouts and the largest request body are
gateway (Envoy listener) settings, TLS 1.3 suites are Envoy's fixed set, retries cannot tell methods
apart (so only failures where the request never reached a backend are
retried), and there is no retry budget.
"""

from __future__ import annotations

import re

from traffic import model
from traffic.model import STICKY, Policy, PolicyError, TrafficClass, format_duration as dur

# Retry conditions where the backend never got the request: safe for any method.
SAFE_RETRY_ON = {"connect-failure": ("connect-failure", "refused-stream"), "reset": ("reset-before-request",)}
# Everything the model can retry, for classes that may replay any method.
ANY_RETRY_ON = {"connect-failure": ("connect-failure", "refused-stream"), "reset": ("reset",),
                "timeout": (), "502": ("502",), "503": ("503",), "504": ("504",)}


def check(policy: Policy) -> None:
    for cls in policy.classes:
        if cls.balance == "sticky_cookie" and cls.sticky_cookie and not re.fullmatch(r"[A-Za-z0-9_-]+", cls.sticky_cookie):
            raise PolicyError(f"classes.{cls.name}.sticky_cookie", "is not a cookie name Envoy can hash on")


model.TIER_CHECKS["istio"] = check


def notes(policy: Policy) -> list[str]:
    out = ["per-client rate limits and in-flight limits are not rendered: Istio needs an EnvoyFilter for them "
           "(no stable schema); the edge tier enforces them",
           "trusted_proxies are not rendered: the gateway trusts a number of hops (meshConfig "
           "gatewayTopology.numTrustedProxies), not addresses",
           "client idle and header timeouts and the largest request body (client.max_body_size) are gateway "
           "listener settings, not rendered",
           "TLS 1.3 cipher suites are Envoy's fixed set (tls.ciphersuites not rendered)",
           "key-exchange groups are Envoy's defaults, X25519 and P-256 (tls.curves not rendered)"]
    for cls in policy.classes:
        r = cls.retries
        unsafe = [c for c in r.on if c not in SAFE_RETRY_ON]
        if r.attempts and r.idempotent_only and unsafe:
            out.append(f"class {cls.name}: retries on {', '.join(unsafe)} not rendered: a VirtualService retry "
                       "cannot tell idempotent methods apart, so only failures before the backend got the request are retried")
        if r.attempts:
            out.append(f"class {cls.name}: no retry budget ({dur(r.budget_ms)}); perTryTimeout is the response timeout")
        if cls.websocket:
            out.append(f"class {cls.name}: no route timeout (it would cut upgraded connections); the tunnel timeout is "
                       "the DestinationRule's idle timeout")
    return out


def route_timeout(cls: TrafficClass) -> str:
    return "0s" if cls.websocket else dur(cls.timeouts.response_ms)


def retry_on(cls: TrafficClass) -> str:
    table = SAFE_RETRY_ON if cls.retries.idempotent_only else ANY_RETRY_ON
    return ",".join(dict.fromkeys(x for c in cls.retries.on for x in table.get(c, ())))


def retries(cls: TrafficClass) -> dict:
    # Istio retries twice by default, including on 503: say "no" explicitly.
    on = retry_on(cls)
    if not cls.retries.attempts or not on:
        return {"attempts": 0}
    # The per-try budget is the whole timeout: a slow request is never cut and replayed.
    return {"attempts": cls.retries.attempts, "perTryTimeout": route_timeout(cls), "retryOn": on}


def uri_matches(path: str) -> list[dict]:
    # The same prefix match as NGINX's location and HAProxy's path_beg.
    return [{"uri": {"prefix": path}}]


def ab_matches(policy: Policy, path: str) -> list[dict]:
    c = policy.canary
    cookie = f"^(.*;\\s*)?{re.escape(c.ab_cookie)}={re.escape(c.ab_value)}(;.*)?$"
    selectors = [{c.ab_header.lower(): {"exact": c.ab_value}}, {"cookie": {"regex": cookie}}]
    return [{**match, "headers": headers} for headers in selectors for match in uri_matches(path)]


def response_headers(policy: Policy) -> dict:
    """Set on every response of every route (the gateway serves HTTPS only)."""
    return {"response": {"set": {"Strict-Transport-Security": policy.headers.hsts, **policy.headers.common()}}}


def load_balancer(cls: TrafficClass) -> dict:
    if cls.balance == "least_conn":
        return {"simple": "LEAST_REQUEST"}
    if cls.balance == "sticky_client":
        # Evaluated in the gateway, where the source is the client (through
        # the trusted hops it is configured with).
        return {"consistentHash": {"useSourceIp": True}}
    if cls.balance == "sticky_cookie":
        # A session cookie (ttl 0s) the proxy sets on the first response.
        return {"consistentHash": {"httpCookie": {"name": cls.sticky_cookie, "path": "/", "ttl": "0s"}}}
    return {"simple": "ROUND_ROBIN"}


def primary_class(policy: Policy, workload: str) -> TrafficClass | None:
    """The class whose balancing the workload's DestinationRule uses: the one
    named after the workload, else its first; the others get subsets."""
    own = [c for c in policy.classes if c.workload == workload]
    return next((c for c in own if c.name == workload), own[0] if own else None)


def variant(policy: Policy, cls: TrafficClass) -> str:
    """"" for the workload's primary class, else the class name (own subsets)."""
    return "" if primary_class(policy, cls.workload) is cls else cls.name


def variants(policy: Policy, workload: str) -> list[tuple[str, TrafficClass | None]]:
    primary = primary_class(policy, workload)
    out = [("", primary)]
    out += [(c.name, c) for c in policy.classes if c.workload == workload and c is not primary]
    return out


def connection_settings(cls: TrafficClass | None) -> tuple[dict, dict]:
    """(tcp, http) connection-pool additions of a class: connect and tunnel timeouts."""
    if cls is None:
        return {}, {}
    tcp = {"connectTimeout": dur(cls.timeouts.connect_ms)}
    http = {}
    if cls.websocket:
        idle = dur(cls.timeouts.tunnel_ms)
        tcp["idleTimeout"] = idle
        http["idleTimeout"] = idle
    return tcp, http


def sticky_classes(policy: Policy) -> list[str]:
    return [c.name for c in policy.classes if c.balance in STICKY]
