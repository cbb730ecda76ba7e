"""Drift check: read rendered configurations back into the model's terms.

`expected(policy, tier)` is what a tier can express of the policy (its
projection); `nginx_view`, `haproxy_view` and `istio_view` read a rendered
configuration (NGINX through crossplane, HAProxy line by line, the Istio
objects as data) into the same shape.  Any difference between the two is
drift: a value that did not reach the tier, or one that came from elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from traffic import haproxy as hx
from traffic import istio as ix
from traffic import nginx as nx
from traffic.model import TLS_VERSIONS, Policy, duration_ms, size_bytes

NGINX_RETRY = {"error": ("connect-failure", "reset"), "timeout": ("timeout",), "http_502": ("502",),
               "http_503": ("503",), "http_504": ("504",)}
HAPROXY_RETRY = {v: k for k, v in hx.RETRY.items()}
ISTIO_RETRY = {"connect-failure": "connect-failure", "refused-stream": "connect-failure",
               "reset-before-request": "reset", "reset": "reset", "502": "502", "503": "503", "504": "504"}
BALANCE_BACK = {"least_conn": "least_conn", "leastconn": "least_conn", "roundrobin": "round_robin",
                "LEAST_REQUEST": "least_conn", "ROUND_ROBIN": "round_robin"}


def ms(value: str) -> int:
    """An NGINX/HAProxy/Istio duration in milliseconds (3s, 300ms, 1h, 3600s)."""
    return duration_ms("(rendered)", value)


# --- what a tier can express ------------------------------------------------------

def expected(policy: Policy, tier: str, *, tls: bool = True, canary: bool = True) -> dict:
    """The policy as `tier` ("nginx", "haproxy", "istio") renders it."""
    h = policy.headers
    headers = dict(h.common())
    if tls:
        headers["Strict-Transport-Security"] = h.hsts
    view = {"headers": headers,
            "tls": {"versions": list(policy.tls.versions), "ciphers": list(policy.tls.ciphers),
                    "ciphersuites": list(policy.tls.ciphersuites), "curves": list(policy.tls.curves)} if tls else None,
            "client": {"connections_per_client": policy.client.connections_per_client,
                       "idle_timeout_ms": policy.client.idle_timeout_ms,
                       "header_timeout_ms": policy.client.header_timeout_ms,
                       "max_body_bytes": policy.client.max_body_bytes},
            "trusted_proxies": sorted(policy.trusted_proxies),
            "canary": {"share": policy.canary.share, "ab_header": policy.canary.ab_header.lower(),
                       "ab_cookie": policy.canary.ab_cookie, "ab_value": policy.canary.ab_value} if canary else None,
            "classes": {}}
    if tier == "istio":
        view["client"] = None
        view["trusted_proxies"] = None
        if tls:
            view["tls"] = {"versions": list(policy.tls.versions), "ciphers": list(policy.tls.ciphers),
                           "ciphersuites": None, "curves": None}
    for cls in policy.classes:
        r = cls.retries
        conditions = set(r.on)
        if tier == "nginx" and conditions & {"connect-failure", "reset"}:
            conditions |= {"connect-failure", "reset"}
        if tier == "nginx" and "connect-failure" in conditions:
            conditions |= {"timeout"}  # NGINX files a connect timeout under `timeout`
        if tier == "istio" and r.idempotent_only:
            conditions &= set(ix.SAFE_RETRY_ON)
        if tier == "istio":
            conditions -= {"timeout"}
        attempts = r.attempts if conditions else 0
        c = {"paths": sorted(cls.paths), "balance": cls.balance,
             "rate": [cls.rate.per_second, cls.rate.burst] if cls.rate else None,
             "connect_ms": cls.timeouts.connect_ms, "response_ms": cls.timeouts.response_ms,
             "tunnel_ms": cls.timeouts.tunnel_ms,
             "retry_attempts": attempts, "retry_conditions": sorted(conditions) if attempts else [],
             "idempotent_only": r.idempotent_only if attempts else None,
             "retry_budget_ms": r.budget_ms if attempts else None,
             "canary": cls.canary and canary, "streaming": cls.streaming, "websocket": cls.websocket}
        if tier == "nginx" and cls.websocket:
            c["response_ms"] = cls.timeouts.tunnel_ms  # one read timeout: the tunnel's
        if tier == "haproxy":
            c["retry_budget_ms"] = None
            c["streaming"] = None  # HAProxy streams by default; nothing to render
        if tier == "istio":
            c["rate"] = None
            c["retry_budget_ms"] = None
            c["idempotent_only"] = None
            c["streaming"] = None
            if cls.websocket:
                c["response_ms"] = None
        view["classes"][cls.name] = c
    return view


# --- NGINX --------------------------------------------------------------------------

def _args(block: list[dict], name: str) -> list[list[str]]:
    return [d["args"] for d in block if d["directive"] == name]


def _one(block: list[dict], name: str) -> list[str] | None:
    found = _args(block, name)
    return found[0] if found else None


def nginx_view(conf: Path | str) -> dict:
    """Read a rendered NGINX tree (nginx.conf and its includes) with crossplane."""
    import crossplane

    parsed = crossplane.parse(str(conf), combine=True, catch_errors=False)
    (main,) = [c["parsed"] for c in parsed["config"]]
    http = next(d["block"] for d in main if d["directive"] == "http")
    zones = {}
    for args in _args(http, "limit_req_zone"):
        zone = next(a for a in args if a.startswith("zone="))[5:].split(":")[0]
        rate = next(a for a in args if a.startswith("rate="))[5:]
        zones[zone] = int(rate.removesuffix("r/s"))
    upstreams = {d["args"][0]: d["block"] for d in http if d["directive"] == "upstream"}
    maps = {(d["args"][0], d["args"][1]): d["block"] for d in http if d["directive"] == "map"}
    split = next((d["block"] for d in http if d["directive"] == "split_clients"), None)
    canary = None
    track = next(((src, block) for (src, dst), block in maps.items() if dst == "$lb_track"), None)
    if track:
        src, block = track
        value = next(d["directive"] for d in block if d["directive"] != "default")
        cookie_src = next(s for (s, dst) in maps if dst == "$lb_ab_cookie")
        first = split[0]["directive"] if split else "*"
        share = int(first.rstrip("%")) if first.endswith("%") else 0   # `* ""` alone: 0%
        canary = {"share": share, "ab_header": src.removeprefix("$http_").replace("_", "-"),
                  "ab_cookie": cookie_src.removeprefix("$cookie_"), "ab_value": value}
    protocols = _one(http, "ssl_protocols")
    suites = _one(http, "ssl_conf_command")
    tls = {"versions": protocols, "ciphers": _one(http, "ssl_ciphers")[0].split(":"),
           "ciphersuites": suites[1].split(":") if suites else [],
           "curves": _one(http, "ssl_ecdh_curve")[0].split(":")} if protocols else None
    servers = [d["block"] for d in http if d["directive"] == "server"]
    app = next(s for s in servers if any(loc["directive"] == "location" for loc in s if loc["args"][-1].startswith("/api")
                                         or loc["directive"] == "include"))
    headers = {}
    for server in servers:
        for args in _args(server, "add_header"):
            if args[0] != "X-Request-ID":
                headers[args[0]] = args[1]
    classes: dict[str, dict] = {}
    for loc in (d for d in app if d["directive"] == "location"):
        path = loc["args"][-1]
        block = loc["block"]
        target = _one(block, "proxy_pass")
        if not target or len(loc["args"]) > 1:  # `location = /health` and `location /` are the role's
            continue
        name = target[0].removeprefix("http://").removesuffix("$lb_track")
        limit = _one(block, "limit_req")
        rate = None
        if limit:
            zone = next(a for a in limit if a.startswith("zone="))[5:]
            burst = int(next(a for a in limit if a.startswith("burst="))[6:])
            rate = [zones[zone], burst]
        nu = _one(block, "proxy_next_upstream")
        attempts = 0 if nu == ["off"] else int(_one(block, "proxy_next_upstream_tries")[0]) - 1
        conditions = sorted({c for word in nu if word in NGINX_RETRY for c in NGINX_RETRY[word]}) if attempts else []
        pool = upstreams[name]
        method = next((d for d in pool if d["directive"] in ("least_conn", "hash", "ip_hash")), None)
        balance = {None: "round_robin", "least_conn": "least_conn", "hash": "sticky_client",
                   "ip_hash": "sticky_client"}[method["directive"] if method else None]
        websocket = any(a[:1] == ["Upgrade"] for a in _args(block, "proxy_set_header"))
        entry = classes.setdefault(name, {"paths": []})
        entry["paths"].append(path)
        entry.update({
            "balance": balance, "rate": rate,
            "connect_ms": ms(_one(block, "proxy_connect_timeout")[0]),
            "response_ms": ms(_one(block, "proxy_read_timeout")[0]),
            "tunnel_ms": ms(_one(block, "proxy_read_timeout")[0]) if websocket else None,
            "retry_attempts": attempts, "retry_conditions": conditions,
            "idempotent_only": ("non_idempotent" not in nu) if attempts else None,
            "retry_budget_ms": ms(_one(block, "proxy_next_upstream_timeout")[0]) if attempts else None,
            "canary": target[0].endswith("$lb_track") and f"{name}{nx.CANARY_SUFFIX}" in upstreams,
            "streaming": _one(block, "proxy_buffering") == ["off"], "websocket": websocket})
    for entry in classes.values():
        entry["paths"].sort()
    limit_conn = _one(http, "limit_conn")
    return {"headers": headers, "tls": tls,
            "client": {"connections_per_client": int(limit_conn[1]),
                       "idle_timeout_ms": ms(_one(http, "keepalive_timeout")[0]),
                       "header_timeout_ms": ms(_one(http, "client_header_timeout")[0]),
                       "max_body_bytes": size_bytes("(rendered)", _one(http, "client_max_body_size")[0])},
            "trusted_proxies": sorted(a[0] for a in _args(http, "set_real_ip_from")),
            "canary": canary, "classes": classes}


# --- HAProxy ------------------------------------------------------------------------

def haproxy_sections(text: str) -> dict[str, list[str]]:
    """{"global": [...], "frontend public": [...], ...}: each section's lines,
    comments dropped and blanks squeezed."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.strip().startswith("http-after-response") else raw.rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            current = " ".join(line.split()[:2])
            sections[current] = []
        elif current:
            sections[current].append(" ".join(line.split()))
    return sections


def haproxy_view(cfg: str, rate_map: str, frontend: str = "frontend public") -> dict:
    """Read a rendered haproxy.cfg and its rate-limit map."""
    sections = haproxy_sections(cfg)
    glob, defaults, front = sections["global"], sections["defaults"], sections[frontend]

    def value(lines: list[str], prefix: str) -> str | None:
        return next((line[len(prefix):].strip() for line in lines if line.startswith(prefix + " ")), None)

    limits = {}
    for line in rate_map.splitlines():
        if line.strip() and not line.startswith("#"):
            path, packed = line.split()
            interval, tolerance = hx.unpack(int(packed))
            limits[path] = [round(1_000_000 / interval), tolerance // interval]
    tracked = {}  # path prefix -> the class whose table counts it (the class's backends track it)
    for name, lines in sections.items():
        if not name.startswith("backend "):
            continue
        for line in lines:
            m = re.match(r"http-request track-sc1 src table st_rl_(\w+) if \{ path_beg ([^}]+) \}$", line)
            if m:
                tracked.update(dict.fromkeys(m[2].split(), m[1]))
    headers = {}
    for line in front:
        m = re.match(r'http-after-response set-header (\S+) "(.*)"', line)
        if m:
            headers[m[1]] = m[2]
    ab_header = ab_cookie = ab_value = None
    for line in front:
        m = re.match(r"acl canary_track req\.(hdr|cook)\(([^)]+)\) -m str (\S+)", line)
        if m:
            ab_value = m[3]
            if m[1] == "hdr":
                ab_header = m[2].lower()
            else:
                ab_cookie = m[2]
    share_line = value(glob, f"set-var {hx.CANARY_SHARE_VAR}")
    share = int(re.search(r"int\((\d+)\)", share_line)[1]) if share_line else 0
    canary = {"share": share, "ab_header": ab_header, "ab_cookie": ab_cookie, "ab_value": ab_value} if ab_value else None
    trusted = next((line.split()[3:] for line in front if line.startswith("acl lb_trusted_peer src")), [])
    inflight = next(int(m[1]) for line in front if (m := re.search(r"sc2_conn_cur gt (\d+)", line)))
    max_body = next((int(m[1]) for line in front
                     if (m := re.search(r"deny_status 413 if \{ req\.hdr_val\(content-length\) gt (\d+) \}", line))), None)
    options = value(glob, "ssl-default-bind-options") or ""
    min_version = re.search(r"ssl-min-ver (\S+)", options)
    ciphers = value(glob, "ssl-default-bind-ciphers")
    tls = {"versions": list(TLS_FROM(min_version[1])), "ciphers": ciphers.split(":") if ciphers else [],
           "ciphersuites": (value(glob, "ssl-default-bind-ciphersuites") or "").split(":"),
           "curves": (value(glob, "ssl-default-bind-curves") or "").split(":")} if min_version else None

    classes: dict[str, dict] = {}
    for line in front:
        m = re.match(r"use_backend (\w+) if \{ path_beg (\S+) \}$", line)
        if not m:
            continue
        name, path = m[1], m[2]
        backend = sections[f"backend {name}"]
        retries = int(value(backend, "retries"))
        retry_on = (value(backend, "retry-on") or "").split()
        balance = value(backend, "balance")
        cookie = value(backend, "cookie")
        entry = classes.setdefault(name, {"paths": []})
        entry["paths"].append(path)
        tunnel = value(backend, "timeout tunnel")
        entry.update({
            "balance": "sticky_cookie" if cookie else ("sticky_client" if balance == "source" else BALANCE_BACK[balance]),
            "rate": limits[path] if tracked.get(path) == name else None,
            "connect_ms": ms(value(backend, "timeout connect")), "response_ms": ms(value(backend, "timeout server")),
            "tunnel_ms": ms(tunnel) if tunnel else None,
            "retry_attempts": retries, "retry_conditions": sorted(HAPROXY_RETRY[c] for c in retry_on) if retries else [],
            "idempotent_only": any(line.startswith("http-request disable-l7-retry") for line in backend) if retries else None,
            "retry_budget_ms": None,
            "canary": f"backend {name}{hx.CANARY_SUFFIX}" in sections, "streaming": None,
            "websocket": tunnel is not None})
    for entry in classes.values():
        entry["paths"].sort()
    return {"headers": headers, "tls": tls,
            "client": {"connections_per_client": inflight,
                       "idle_timeout_ms": ms(value(defaults, "timeout http-keep-alive")),
                       "header_timeout_ms": ms(value(defaults, "timeout http-request")),
                       "max_body_bytes": max_body},
            "trusted_proxies": sorted(trusted), "canary": canary, "classes": classes}


def TLS_FROM(min_version: str) -> tuple[str, ...]:  # noqa: N802 - reads like the constant it wraps
    return TLS_VERSIONS[TLS_VERSIONS.index(min_version):]


# --- Istio --------------------------------------------------------------------------

def istio_view(objects: list[dict]) -> dict:
    """Read the Gateway, VirtualService and DestinationRules (plain manifests)."""
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (vs,) = by_kind["VirtualService"]
    rules = {dr["spec"]["host"]: dr["spec"] for dr in by_kind["DestinationRule"]}
    (gateway,) = by_kind["Gateway"]
    https = next(s for s in gateway["spec"]["servers"] if s["port"]["protocol"] == "HTTPS")
    min_version = https["tls"]["minProtocolVersion"].replace("TLSV1_", "TLSv1.")
    tls = {"versions": list(TLS_FROM(min_version)), "ciphers": https["tls"].get("cipherSuites", []), "ciphersuites": None,
           "curves": None}
    routes = {r["name"]: r for r in vs["spec"]["http"]}
    canary = None
    classes: dict[str, dict] = {}
    headers: dict[str, str] = {}
    for name, route in routes.items():
        if name.endswith("-ab"):
            header = next(m["headers"] for m in route["match"] if "cookie" not in m["headers"])
            (ab_header, ab_match), = header.items()
            cookie = next(m["headers"]["cookie"]["regex"] for m in route["match"] if "cookie" in m["headers"])
            cm = re.match(r"\^\(\.\*;\\s\*\)\?(.+)=(.+)\(;\.\*\)\?\$", cookie)
            canary = (canary or {}) | {"ab_header": ab_header, "ab_cookie": re.sub(r"\\(.)", r"\1", cm[1]),
                                       "ab_value": ab_match["exact"]}
            continue
        headers = route.get("headers", {}).get("response", {}).get("set", {})
        stable = route["route"][0]["destination"]
        weights = {d["destination"]["subset"].rsplit("-", 1)[-1]: d["weight"] for d in route["route"]}
        if "canary" in weights:
            canary = (canary or {}) | {"share": weights["canary"]}
        rule = rules[stable["host"]]
        subset = next(s for s in rule["subsets"] if s["name"] == stable["subset"])
        policy = {**rule["trafficPolicy"], **subset.get("trafficPolicy", {})}
        lb = policy["loadBalancer"]
        if "consistentHash" in lb:
            balance = "sticky_client" if lb["consistentHash"].get("useSourceIp") else "sticky_cookie"
        else:
            balance = BALANCE_BACK[lb["simple"]]
        pool = policy["connectionPool"]
        idle = pool.get("http", {}).get("idleTimeout")
        r = route["retries"]
        conditions = sorted({ISTIO_RETRY[c] for c in r.get("retryOn", "").split(",") if c}) if r["attempts"] else []
        cls_name = re.sub(r"-\d+$", "", name)
        entry = classes.setdefault(cls_name, {"paths": []})
        entry["paths"].extend(m["uri"]["prefix"] for m in route["match"])
        entry.update({
            "balance": balance, "rate": None, "connect_ms": ms(pool["tcp"]["connectTimeout"]),
            "response_ms": None if route["timeout"] == "0s" else ms(route["timeout"]),
            "tunnel_ms": ms(idle) if idle else None,
            "retry_attempts": r["attempts"], "retry_conditions": conditions, "idempotent_only": None,
            "retry_budget_ms": None, "canary": f"{name}-ab" in routes, "streaming": None, "websocket": idle is not None})
    for entry in classes.values():
        entry["paths"].sort()
    return {"headers": headers, "tls": tls, "client": None, "trusted_proxies": None, "canary": canary,
            "classes": classes}


def differences(want: dict, got: dict, path: str = "") -> list[str]:
    """Every field where the rendered view differs from the policy's projection."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(want.keys() | got.keys()):
            if key not in got:
                out.append(f"{path}{key}: in the policy, missing from the rendered config")
            elif key not in want:
                out.append(f"{path}{key}: in the rendered config, not in the policy")
            else:
                out += differences(want[key], got[key], f"{path}{key}.")
        return out
    return [] if want == got else [f"{path.rstrip('.')}: policy {want!r}, rendered {got!r}"]
