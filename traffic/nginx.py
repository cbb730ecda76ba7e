"""NGINX renderer: the policy's parts of an NGINX configuration.

The role (roles/nginx_lb, through its filter plugin) and the local stack
(infra/local.py) place these blocks in their own files; workers, buffers,
listeners, TLS files and logs stay with them.  `notes` lists what NGINX
cannot express exactly as the model says; the blocks carry the same notes as
comments, so a reader of the rendered file sees them too.
"""

from __future__ import annotations

import dataclasses

import re
from dataclasses import dataclass, field

from traffic import model
from traffic.model import Policy, PolicyError, TrafficClass, format_duration as dur, format_size

# NGINX reads a cookie through $cookie_<name>: a variable name, so no dashes.
_COOKIE_VARIABLE = re.compile(r"[A-Za-z0-9_]+")
BALANCE = {"round_robin": None, "least_conn": "least_conn",
           # Per client address (not ip_hash's /24), consistent: when a server
           # leaves only its clients move, as with HAProxy's `balance source`.
           "sticky_client": "hash $binary_remote_addr consistent"}
# A server that vanished (killed, its host gone) does not refuse a connection:
# the connect times out, which NGINX files under `timeout`, not `error`.  It
# cannot tell a connect timeout from a read timeout, so a connect failure
# retries both (notes() says so); a read timeout on a non-idempotent request
# is still never resent.
RETRY = {"connect-failure": "error timeout", "reset": "error", "timeout": "timeout",
         "502": "http_502", "503": "http_503", "504": "http_504"}
CANARY_SUFFIX = "_canary"
CANARY_FILE = "conf.d/canary.conf"
# The pools; automata-lb marks a server `down` here while its instance is replaced.
UPSTREAMS_FILE = "conf.d/upstreams.conf"


def check(policy: Policy) -> None:
    """What NGINX open source cannot do at all: refused for every tier."""
    for cls in policy.classes:
        if cls.balance == "sticky_cookie":
            raise PolicyError(f"classes.{cls.name}.balance",
                              "sticky_cookie: NGINX open source cannot set a sticky cookie (NGINX Plus only); "
                              "use sticky_client, which every tier can do")
    if not _COOKIE_VARIABLE.fullmatch(policy.canary.ab_cookie):
        raise PolicyError("canary.ab_cookie", f"{policy.canary.ab_cookie!r}: NGINX reads cookies as $cookie_<name>, "
                                              "so the name may hold only letters, digits and _")


model.TIER_CHECKS["nginx"] = check
model.TIER_CHECKS["local"] = check


def notes(policy: Policy) -> list[str]:
    out = []
    for cls in policy.classes:
        both = {"connect-failure", "reset"}
        if cls.retries.attempts and (both & set(cls.retries.on)) not in (set(), both):
            out.append(f"class {cls.name}: NGINX's `error` covers connect failures and broken connections alike, "
                       "so an idempotent request is also retried after a reset")
        if cls.retries.attempts and "connect-failure" in cls.retries.on and "timeout" not in cls.retries.on:
            out.append(f"class {cls.name}: NGINX files a connect timeout under `timeout`, so a connect failure "
                       "retry also retries an idempotent request whose response timed out")
        if cls.websocket:
            out.append(f"class {cls.name}: NGINX has one read timeout for the handshake and the upgraded connection; "
                       f"it uses the tunnel timeout ({dur(cls.timeouts.tunnel_ms)})")
    out.append("trusted proxies: NGINX follows any number of trusted hops in X-Forwarded-For (HAProxy: up to 3)")
    return out


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    weight: int = 1
    backup: bool = False
    max_fails: int | None = None
    fail_timeout: str | None = None


@dataclass(frozen=True)
class Options:
    """The role's own knobs that appear inside policy blocks."""

    max_fails: int = 3
    fail_timeout: str = "10s"
    keepalive: int = 32
    keepalive_timeout: str = "4s"
    zone_size: str = "10m"
    drained: tuple[str, ...] = ()


@dataclass
class Rendered:
    http: str          # inside http {}: client address, limits, canary track
    canary: str        # conf.d/canary.conf, included in http {}: the canary share
    tls: str           # inside http {} when TLS is on: protocols and ciphers
    upstreams: str     # one upstream per class (and its canary)
    routes: str        # one location per class path
    headers: str       # inside the HTTPS (or only) server {}: security headers
    hsts: str          # HTTPS server only
    health: str        # the health path's location: the health class's stable pool, no limit
    notes: list[str] = field(default_factory=list)


def d(name: str, value: str = "", indent: int = 4) -> str:
    """One directive, column-aligned like the role's templates."""
    return f"{' ' * indent}{name:<28} {value};".rstrip() if value else f"{' ' * indent}{name};"


def upstream_name(cls: TrafficClass, track: str = "stable") -> str:
    return cls.name if track == "stable" else cls.name + CANARY_SUFFIX


def _comment(lines: list[str], indent: int = 4) -> list[str]:
    return [f"{' ' * indent}# NOTE: {line}" for line in lines]


def http_block(policy: Policy, opts: Options, *, canary: bool) -> str:
    out = ["    # --- traffic policy (traffic/policy.yml, rendered by traffic/nginx.py) ---",
           "    # The client is the right-most X-Forwarded-For address not in trusted_proxies;",
           "    # limits and sticky classes key on it."]
    out += [d("set_real_ip_from", cidr) for cidr in policy.trusted_proxies]
    out += [d("real_ip_header", "X-Forwarded-For"), d("real_ip_recursive", "on"), ""]
    out += ["    geo $realip_remote_addr $lb_trusted_peer {", d("default", "0", 8)]
    out += [d(cidr, "1", 8) for cidr in policy.trusted_proxies]
    out += ["    }", "",
            "    # X-Forwarded-For sent upstream: a trusted proxy's chain plus the peer;",
            "    # from anyone else only the peer, so a spoofed chain never reaches the backends.",
            '    map "$lb_trusted_peer$http_x_forwarded_for" $lb_forwarded_for {',
            d("default", "$realip_remote_addr", 8),
            d('"~^1(?<chain>.+)$"', '"$chain, $realip_remote_addr"', 8),
            "    }", ""]
    out += [d("keepalive_timeout", dur(policy.client.idle_timeout_ms)),
            d("client_header_timeout", dur(policy.client.header_timeout_ms)),
            d("client_max_body_size", format_size(policy.client.max_body_bytes)), ""]
    out.append("    # Per client: a token bucket per rated class (rate r/s, burst served at once), requests in flight.")
    for cls in policy.classes:
        if cls.rate:
            out.append(d("limit_req_zone", f"$binary_remote_addr zone=rl_{cls.name}:{opts.zone_size} "
                                           f"rate={cls.rate.per_second}r/s"))
    out += [d("limit_conn_zone", f"$binary_remote_addr zone=per_client:{opts.zone_size}"),
            d("limit_conn", f"per_client {policy.client.connections_per_client}"),
            d("limit_req_status", "429"), d("limit_conn_status", "429")]
    if canary:
        c = policy.canary
        out += ["", f"    # Canary track: the A/B header or cookie ({c.ab_value}) always, else the",
                f"    # share of {CANARY_FILE} ($lb_canary_dice)."]
        header = "$http_" + c.ab_header.lower().replace("-", "_")
        out += [f"    map $cookie_{c.ab_cookie} $lb_ab_cookie {{", d(c.ab_value, CANARY_SUFFIX, 8),
                d("default", "$lb_canary_dice", 8), "    }",
                f"    map {header} $lb_track {{", d(c.ab_value, CANARY_SUFFIX, 8),
                d("default", "$lb_ab_cookie", 8), "    }"]
    return "\n".join(out)


def canary_file(share: int, *, canary: bool = True) -> str:
    """conf.d/canary.conf: the canary share alone, in a file of its own, so a
    progressive rollout changes one checked file and reloads (automata-lb
    writes it between converges with this same function)."""
    if not canary:
        return "# No canary servers on this edge: canary classes go to their stable pools.\n"
    out = [f"# The canary share ({share}%), keyed on the request id: random per request, and",
           "# the same for a retried one.  Rendered by traffic/nginx.py (canary_file).",
           'split_clients "${lb_request_id}" $lb_canary_dice {']
    if share > 0:
        out.append(d(f"{share}%", CANARY_SUFFIX))
    if share < 100:
        out.append(d("*", '""'))
    return "\n".join([*out, "}", ""])


def tls_block(policy: Policy) -> str:
    t = policy.tls
    out = ["    # TLS profile (traffic/policy.yml).", d("ssl_protocols", " ".join(t.versions))]
    if t.ciphers:
        out.append(d("ssl_ciphers", ":".join(t.ciphers)))
    if t.ciphersuites:
        out.append(d("ssl_conf_command", "Ciphersuites " + ":".join(t.ciphersuites)))
    out.append(d("ssl_ecdh_curve", ":".join(t.curves)))
    out.append(d("ssl_prefer_server_ciphers", "off"))
    return "\n".join(out)


def headers_block(policy: Policy) -> str:
    # `always`: error pages (429, 502, ...) carry them too.  No location sets
    # add_header, which would silently drop all of these.
    return "\n".join(d("add_header", f'{name} "{value}" always') for name, value in policy.headers.common().items())


def hsts_block(policy: Policy) -> str:
    return d("add_header", f'Strict-Transport-Security "{policy.headers.hsts}" always')


def _servers(servers: list[Server], opts: Options) -> list[str]:
    out = []
    for s in servers:
        flags = " backup" if s.backup else ""
        flags += " down" if s.name in opts.drained else ""
        out.append(d("server", f"{s.address}:{s.port} weight={s.weight} "
                               f"max_fails={s.max_fails if s.max_fails is not None else opts.max_fails} "
                               f"fail_timeout={s.fail_timeout or opts.fail_timeout}{flags}") + f"  # {s.name}")
    return out


def upstreams_block(policy: Policy, servers: list[Server], canary_servers: list[Server], opts: Options) -> str:
    out = ["# One pool per traffic class (and one per canary class), from traffic/policy.yml.",
           "# `zone` puts each pool's state in shared memory, so every worker sees the",
           "# same failure counts and in-flight numbers."]
    tracks = [("stable", servers)] + ([("canary", canary_servers)] if canary_servers else [])
    for cls in policy.classes:
        for track, pool in tracks:
            if track == "canary" and not cls.canary:
                continue
            name = upstream_name(cls, track)
            out += ["", f"upstream {name} {{", d("zone", f"{name} 64k")]
            if BALANCE[cls.balance]:
                out.append(d(BALANCE[cls.balance]))
            if track == "canary" and BALANCE[cls.balance] in (None, "least_conn"):
                # The stable servers stand behind the canary: a canary that is
                # drained, replaced or dead sends its share to stable, not 502s.
                pool = pool + [dataclasses.replace(s, backup=True) for s in servers if not s.backup]
            out += _servers(pool, opts)
            out += [d("keepalive", str(opts.keepalive)), d("keepalive_timeout", opts.keepalive_timeout), "}"]
    return "\n".join(out)


def next_upstream(cls: TrafficClass) -> str:
    r = cls.retries
    if not r.attempts:
        return "off"
    conditions = list(dict.fromkeys(word for c in r.on for word in RETRY[c].split()))
    if not r.idempotent_only:
        conditions.append("non_idempotent")
    return " ".join(conditions)


# The health path's connect timeout.  A health probe (an outer balancer's,
# the floating address's track script, which gives up after 1 s) must learn
# within well under a second whether any instance of the pool answers: a
# dead instance's address takes the class's whole connect timeout (3 s, no
# ARP answer) before the next instance is tried, so one dead instance made
# every third probe fail and moved the floating address.  A LAN connect
# takes under a millisecond; three tries stay under a second.
HEALTH_CONNECT_MS = 250


def location(modifier_path: str, cls: TrafficClass, policy: Policy, *, limited: bool = True,
             canary: bool = False, connect_ms: int | None = None) -> str:
    t, r = cls.timeouts, cls.retries
    read = t.tunnel_ms if cls.websocket else t.response_ms
    out = [f"location {modifier_path} {{"]
    if limited and cls.rate:
        out.append(d("limit_req", f"zone=rl_{cls.name} burst={cls.rate.burst} nodelay"))
    out.append(d("include", "proxy_params"))
    if cls.websocket:
        out += [d("proxy_set_header", "Upgrade $http_upgrade"), d("proxy_set_header", "Connection $lb_connection_upgrade")]
    else:
        out.append(d("proxy_set_header", 'Connection ""'))
    if cls.streaming:
        out.append(d("proxy_buffering", "off"))
    out += [d("proxy_connect_timeout", dur(min(t.connect_ms, connect_ms or t.connect_ms))),
            d("proxy_send_timeout", dur(read)),
            d("proxy_read_timeout", dur(read)),
            # Without `non_idempotent`, a POST/PATCH/LOCK already sent is never repeated.
            d("proxy_next_upstream", next_upstream(cls))]
    if r.attempts:
        out += [d("proxy_next_upstream_tries", str(r.attempts + 1)), d("proxy_next_upstream_timeout", dur(r.budget_ms))]
    target = f"http://{cls.name}$lb_track" if canary and cls.canary else f"http://{cls.name}"
    out += [d("proxy_pass", target), "}"]
    return "\n".join(out)


def routes_block(policy: Policy, *, canary: bool) -> str:
    out = ["# Path prefix -> traffic class (traffic/policy.yml); the longest prefix wins."]
    for path, cls in policy.routes():
        out += ["", location(path, cls, policy, canary=canary)]
    return "\n".join(out)


def render(policy: Policy, servers: list[Server], canary_servers: list[Server], opts: Options | None = None, *,
           health_path: str = "/health", health_class: str = "api") -> Rendered:
    """The policy's blocks for one NGINX; the health path (a role knob) is
    answered by `health_class`'s stable pool without its rate limit."""
    opts = opts or Options()
    health_cls = policy.traffic_class(health_class)
    if not servers:
        raise PolicyError("(servers)", "no servers to balance: the edge's backend list is empty")
    canary = bool(canary_servers) and any(c.canary for c in policy.classes)
    found = notes(policy)
    if not canary_servers and any(c.canary for c in policy.classes):
        found.append("no canary servers: the canary share and A/B rule are not rendered, canary classes go to stable")
    rendered = Rendered(
        http=http_block(policy, opts, canary=canary) + "\n" + "\n".join(_comment(found)),
        canary=canary_file(policy.canary.share, canary=canary),
        tls=tls_block(policy),
        upstreams=upstreams_block(policy, servers, canary_servers, opts),
        routes=routes_block(policy, canary=canary),
        headers=headers_block(policy),
        hsts=hsts_block(policy),
        health=location(f"= {health_path}", health_cls, policy, limited=False, connect_ms=HEALTH_CONNECT_MS),
        notes=found,
    )
    return rendered


def servers_from(items: list[dict]) -> list[Server]:
    """Inventory server dicts ({name, address, port, weight?, backup?, ...})."""
    keys = Server.__dataclass_fields__
    return [Server(**{k: v for k, v in item.items() if k in keys}) for item in items]
