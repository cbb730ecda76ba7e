"""HAProxy renderer: the policy's parts of an HAProxy configuration.

roles/haproxy_lb (through its filter plugin) and the local stack place these
blocks; threads, maxconn, listeners, health checks, logs and the stats page
stay with them.

Rate and burst mean what NGINX's `limit_req ... burst=B nodelay` means: a
token bucket of B + 1 requests refilled at R per second.  HAProxy 2.6 has no
such counter, so each client's schedule is kept as a GCRA ("theoretical
arrival time", the algorithm NGINX's leaky bucket is equivalent to) in a
32-bit microsecond clock in the stick table's gpt0.  A request is refused
when the client is more than B intervals ahead of schedule; otherwise its
schedule moves one interval (1/R s) on.  Tolerance: both count in whole
requests on a millisecond (NGINX) or microsecond (HAProxy) clock; two
requests of one client handled at the same instant by two HAProxy threads
can both pass on the same token (at most one extra per concurrent pair).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from traffic import model
from traffic.model import NON_IDEMPOTENT, Policy, PolicyError, RateLimit, TrafficClass, format_duration as dur

BALANCE = {"round_robin": "roundrobin", "least_conn": "leastconn", "sticky_client": "source",
           "sticky_cookie": "roundrobin"}
RETRY = {"connect-failure": "conn-failure", "reset": "empty-response", "timeout": "response-timeout",
         "502": "502", "503": "503", "504": "504"}
CANARY_SUFFIX = "_canary"
NOT_FOUND = "no_class"
RESERVED = ("public", "stats", NOT_FOUND)
# The packed map value: tolerance (µs) above this many, interval (µs) below.
PACK = 1 << 20
TRUSTED_HOPS = 3


def check(policy: Policy) -> None:
    for cls in policy.classes:
        if cls.name in RESERVED or cls.name.endswith(CANARY_SUFFIX) or cls.name.startswith("st_"):
            raise PolicyError(f"classes.{cls.name}", f"the name is taken by HAProxy's own sections "
                                                     f"({', '.join(RESERVED)}, st_*, *{CANARY_SUFFIX})")
        if cls.rate and cls.rate.interval_us >= PACK:
            raise PolicyError(f"classes.{cls.name}.rate.per_second", "must be at least 1 request a second")


model.TIER_CHECKS["haproxy"] = check


def pack(rate: RateLimit) -> int:
    """The rate_limits.map value of a class: one lookup gives both numbers."""
    return rate.tolerance_us * PACK + rate.interval_us


def unpack(value: int) -> tuple[int, int]:
    """(interval_us, tolerance_us) of a map value."""
    return value % PACK, value // PACK


def notes(policy: Policy) -> list[str]:
    out = [f"trusted proxies: HAProxy follows at most {TRUSTED_HOPS} trusted hops in X-Forwarded-For (NGINX: any number)",
           "client.max_body_size: HAProxy refuses a larger Content-Length; a chunked body is not counted (NGINX: both)"]
    for cls in policy.classes:
        if cls.retries.attempts:
            out.append(f"class {cls.name}: no retry budget in HAProxy ({dur(cls.retries.budget_ms)} not rendered); "
                       "a request is retried only while it fits in one buffer (tune.bufsize)")
    return out


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    weight: int | None = None
    maxconn: int | None = None
    maxqueue: int | None = None


@dataclass(frozen=True)
class Options:
    check_path: str = "/healthz"
    check_expect_status: int = 200
    table_size: str = "200k"
    rate_map: str = "/etc/haproxy/maps/rate_limits.map"


# The process variable the canary dice reads: set in `global` from the
# policy's share, changed at runtime (the runtime API) until the next reload.
CANARY_SHARE_VAR = "proc.canary_share"


@dataclass
class Rendered:
    global_tls: str    # in `global`
    global_vars: str   # in `global`: the canary share the routing rules read
    defaults: str      # in `defaults`: client-side timeouts
    tables: str        # stick-table backends
    frontend: str      # rules of the public frontend, routing last
    backends: str      # one backend per class (and canary)
    rate_map: str      # rate_limits.map content (path prefix -> packed limit)
    canary_share: int  # CANARY_SHARE_VAR's value (0 without canary servers)
    trusted_proxies: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def d(name: str, value: str = "", indent: int = 4) -> str:
    return f"{' ' * indent}{name:<31} {value}".rstrip()


def global_tls(policy: Policy) -> str:
    t = policy.tls
    out = [d("ssl-default-bind-ciphers", ":".join(t.ciphers))] if t.ciphers else []
    if t.ciphersuites:
        out.append(d("ssl-default-bind-ciphersuites", ":".join(t.ciphersuites)))
    out.append(d("ssl-default-bind-curves", ":".join(t.curves)))
    out.append(d("ssl-default-bind-options", f"prefer-client-ciphers ssl-min-ver {t.min_version} no-tls-tickets"))
    return "\n".join(out)


def defaults_block(policy: Policy, health_class: str) -> str:
    # Sections without a class (the 404 backend, stats) take the health class's.
    fallback = policy.traffic_class(health_class).timeouts
    return "\n".join(["    # The header timeout also bounds the wait for the body's first buffer: a",
                      "    # body sent a byte at a time gets 408 instead of holding a backend",
                      "    # connection for as long as it trickles.",
                      d("option", "http-buffer-request"),
                      d("timeout http-request", dur(policy.client.header_timeout_ms)),
                      d("timeout http-keep-alive", dur(policy.client.idle_timeout_ms)),
                      d("timeout connect", dur(fallback.connect_ms)),
                      d("timeout server", dur(fallback.response_ms))])


def _expire(rate: RateLimit) -> str:
    # A client must be remembered at least until its bucket has drained, or
    # forgetting it would hand it a fresh burst early.
    drain = -(-rate.tolerance_us // 1_000_000) + 1
    return f"{max(60, drain)}s"


def tables_block(policy: Policy, opts: Options) -> str:
    out = ["# Per-client tables (traffic/policy.yml): requests in flight, and one request",
           "# schedule per rated class (gpt0: when the client's next token is due, µs).",
           "backend st_inflight",
           d("stick-table", f"type ipv6 size {opts.table_size} expire 60s store conn_cur"), ""]
    for cls in policy.classes:
        if cls.rate:
            out += [f"backend st_rl_{cls.name}",
                    d("stick-table", f"type ipv6 size {opts.table_size} expire {_expire(cls.rate)} store gpt0"), ""]
    return "\n".join(out)


def _path_acl(path: str) -> str:
    return f"{{ path_beg {path} }}"


def frontend_block(policy: Policy, opts: Options, *, canary: bool, health_path: str, health_class: str) -> str:
    out = ["    # --- traffic policy (traffic/policy.yml, rendered by traffic/haproxy.py) ---",
           "    # The client: the right-most X-Forwarded-For address not in trusted_proxies.",
           "    # What the backends get: a trusted proxy's chain plus the peer, from anyone",
           "    # else the peer only (a spoofed chain is dropped)."]
    if policy.trusted_proxies:
        out += [d("acl lb_trusted_peer", "src " + " ".join(policy.trusted_proxies)),
                d("http-request set-header", 'X-Forwarded-For "%[req.fhdr(X-Forwarded-For)], %[src]" '
                                             "if lb_trusted_peer { req.fhdr(X-Forwarded-For) -m found }"),
                d("http-request set-header", "X-Forwarded-For %[src] if !lb_trusted_peer || "
                                             "!{ req.fhdr(X-Forwarded-For) -m found }")]
        for hop in range(2, TRUSTED_HOPS + 2):
            out.append(d("http-request set-src", f"hdr_ip(X-Forwarded-For,-{hop}) if lb_trusted_peer "
                                                 f"{{ hdr_cnt(X-Forwarded-For) ge {hop} }}"))
    else:
        out.append(d("http-request set-header", "X-Forwarded-For %[src]"))
    out.append(d("http-request set-header", "X-Real-IP %[src]"))

    out += ["", "    # Bodies announced larger than the policy's limit never reach a backend.",
            d("http-request deny", f"deny_status 413 if {{ req.hdr_val(content-length) gt {policy.client.max_body_bytes} }}")]

    out += ["", "    # Requests in flight per client.",
            d("http-request track-sc2", "src table st_inflight"),
            d("http-request deny", f"deny_status 429 if {{ sc2_conn_cur gt {policy.client.connections_per_client} }}")]

    h = policy.headers
    out += ["", "    # Security headers on every response, HAProxy's own (429, 503) included."]
    out.append(d("http-after-response set-header", f'Strict-Transport-Security "{h.hsts}" if {{ ssl_fc }}'))
    out += [d("http-after-response set-header", f'{name} "{value}"') for name, value in h.common().items()]

    c = policy.canary
    out += ["", "    # Routing: the longest matching prefix picks the class; for a canary class the",
            "    # canary track comes first.  Paths of no class get 404."]
    if canary:
        # One ACL, its lines OR'd in order: the A/B header, the A/B cookie, then
        # the canary dice.  One rule per class then sends either to the canary
        # backend, and a request of another class tests its prefix once, not twice.
        out += [d("acl canary_track", f"req.hdr({c.ab_header}) -m str {c.ab_value}"),
                d("acl canary_track", f"req.cook({c.ab_cookie}) -m str {c.ab_value}"),
                # Rendered at a share of 0 too: the share is a process variable the
                # runtime API changes (automata-lb canary-deploy), so the rule must be there.
                d("acl canary_track", f"rand(100),sub({CANARY_SHARE_VAR}) -m int lt 0")]
    out.append(d("use_backend", f"{health_class} if {{ path {health_path} }}"))
    for path, cls in policy.routes():
        if canary and cls.canary:
            out.append(d("use_backend", f"{cls.name}{CANARY_SUFFIX} if {_path_acl(path)} canary_track"))
        out.append(d("use_backend", f"{cls.name} if {_path_acl(path)}"))
    out.append(d("default_backend", NOT_FOUND))
    return "\n".join(out)


def _rate_rules(cls: TrafficClass, opts: Options) -> list[str]:
    """Rate + burst per client, in the class's backends (its canary backend
    shares the table): a request is refused when the client is more than
    `burst` intervals ahead of its schedule (GCRA, see the module's doc).
    Routing has picked the class already, so only requests of a rated class
    pay for it, and they test one prefix instead of every rated one."""
    return [
        # The health path is routed to its class's backend without being one
        # of its paths: it is not counted.
        d("http-request track-sc1", f"src table st_rl_{cls.name} if {{ path_beg {' '.join(cls.paths)} }}"),
        d("http-request set-var(txn.rl)", f"path,map_beg_int({opts.rate_map}) if {{ sc1_tracked }}"),
        d("http-request set-var(txn.now)", "date(0,us),and(4294967295) if { sc1_tracked }"),
        d("http-request set-var(txn.ahead)", "sc1_get_gpt0,sub(txn.now),and(4294967295) if { sc1_tracked }"),
        # A schedule in the past (or a client seen for the first time) is "on time".
        d("http-request set-var(txn.ahead)", "int(0) if { sc1_tracked } { var(txn.ahead) -m int ge 2147483648 } "
                                             "|| { sc1_tracked } { sc1_get_gpt0 eq 0 }"),
        d("http-request deny", "deny_status 429 hdr Retry-After 1 if { sc1_tracked } "
                               f"{{ var(txn.rl),div({PACK}),sub(txn.ahead) -m int lt 0 }}"),
        d("http-request sc-set-gpt0(1)", f"var(txn.rl),and({PACK - 1}),add(txn.ahead),add(txn.now),"
                                         "and(4294967295) if { sc1_tracked }")]


def _backend(cls: TrafficClass, name: str, servers: list[Server], opts: Options,
             backups: list[Server] = ()) -> list[str]:
    t, r = cls.timeouts, cls.retries
    out = [f"backend {name}", d("balance", BALANCE[cls.balance])]
    if cls.balance == "sticky_client":
        # Consistent: when an instance leaves or joins, only 1/n of the clients move.
        out.append(d("hash-type", "consistent"))
    if cls.balance == "sticky_cookie":
        out.append(d("cookie", f"{cls.sticky_cookie} insert indirect nocache"))
    out += [d("timeout connect", dur(t.connect_ms)), d("timeout server", dur(t.response_ms))]
    if cls.websocket:
        out.append(d("timeout tunnel", dur(t.tunnel_ms)))
    if cls.rate:
        out += _rate_rules(cls, opts)
    out.append(d("retries", str(r.attempts)))
    if r.attempts:
        out += [d("retry-on", " ".join(dict.fromkeys(RETRY[x] for x in r.on))),
                # Every retry on another server, not only the last one.
                d("option redispatch", "1")]
        if r.idempotent_only:
            # Only a connection failure (nothing sent) is retried for these.
            out.append(d("http-request disable-l7-retry", f"if {{ method {' '.join(NON_IDEMPOTENT)} }}"))
    out += [d("option httpchk", f"GET {opts.check_path}"), d("http-check expect", f"status {opts.check_expect_status}")]
    for s in servers:
        extra = "".join(f" {k} {getattr(s, k)}" for k in ("weight", "maxconn", "maxqueue") if getattr(s, k) is not None)
        cookie = f" cookie {s.name}" if cls.balance == "sticky_cookie" else ""
        out.append(d("server", f"{s.name} {s.address}:{s.port}{extra}{cookie}"))
    if backups:
        # The stable servers stand behind the canary: a canary that is
        # drained, replaced or dead sends its share to stable, not 503s.
        for s in backups:
            out.append(d("server", f"{s.name} {s.address}:{s.port} backup"))
    return out


def backends_block(policy: Policy, servers: list[Server], canary_servers: list[Server], opts: Options) -> str:
    out = []
    for cls in policy.classes:
        out += [*_backend(cls, cls.name, servers, opts), ""]
        if canary_servers and cls.canary:
            out += [*_backend(cls, cls.name + CANARY_SUFFIX, canary_servers, opts, servers), ""]
    out += [f"backend {NOT_FOUND}", d("http-request deny", "deny_status 404"), ""]
    return "\n".join(out)


def rate_map(policy: Policy) -> str:
    lines = ["# <path prefix> <tolerance_us * 2^20 + interval_us>, longest prefix first (map_beg_int",
             "# takes the first match).  traffic.haproxy.pack(RateLimit(rate, burst)) makes a value."]
    lines += [f"{path} {pack(cls.rate)}" for path, cls in policy.routes() if cls.rate]
    return "\n".join(lines) + "\n"


def render(policy: Policy, servers: list[Server], canary_servers: list[Server], opts: Options | None = None, *,
           health_path: str = "/health", health_class: str = "api") -> Rendered:
    opts = opts or Options()
    policy.traffic_class(health_class)
    if not servers:
        raise PolicyError("(servers)", "no servers to balance: the edge's backend list is empty")
    if not re.fullmatch(r"/[^\s{}#]*", health_path):
        raise PolicyError("(health path)", f"{health_path!r} is not a path")
    canary = bool(canary_servers) and any(c.canary for c in policy.classes)
    found = notes(policy)
    if not canary:
        found.append("no canary servers: the canary share and A/B rule are not rendered, canary classes go to stable")
    frontend = frontend_block(policy, opts, canary=canary, health_path=health_path, health_class=health_class)
    frontend += "\n" + "\n".join(f"    # NOTE: {n}" for n in found)
    share = policy.canary.share if canary else 0
    return Rendered(global_tls=global_tls(policy), global_vars=d("set-var", f"{CANARY_SHARE_VAR} int({share})"),
                    defaults=defaults_block(policy, health_class),
                    tables=tables_block(policy, opts), frontend=frontend,
                    backends=backends_block(policy, servers, canary_servers, opts), rate_map=rate_map(policy),
                    canary_share=share, trusted_proxies=list(policy.trusted_proxies), notes=found)


def servers_from(items: list[dict]) -> list[Server]:
    keys = Server.__dataclass_fields__
    return [Server(**{k: v for k, v in item.items() if k in keys}) for item in items]
