"""The traffic policy model: typed, validated, one file for every tier.

    from traffic import model
    policy = model.load()                                  # traffic/policy.yml, validated
    policy.traffic_class("api").rate.per_second            # 10
    changed = policy.replace("classes.api.rate.per_second", 20)   # a validated copy
    model.edit("classes.api.rate.per_second", 20)          # the same, written back to the file

Every check raises PolicyError naming the field (`classes.api.rate.burst`)
and the reason, before any renderer runs, so a bad policy changes no host and
no resource.  Renderers live next to this module (nginx.py, haproxy.py,
istio.py); each states what its tier cannot express (`notes`).
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

POLICY_FILE = Path(__file__).with_name("policy.yml")

TIERS = ("nginx", "haproxy", "istio", "local")
# The backend Deployments of the Kubernetes program (infra/naming.py
# TRAFFIC_CLASSES; a test keeps the two equal): a class names the one that serves it.
WORKLOADS = ("api", "websocket", "ai")
BALANCES = ("round_robin", "least_conn", "sticky_client", "sticky_cookie")
STICKY = ("sticky_client", "sticky_cookie")
RETRY_ON = ("connect-failure", "reset", "timeout", "502", "503", "504")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
# The TLS profile may only narrow Mozilla's "intermediate" configuration
# (guideline 5.7, what the TLS scanner in the tests checks against): a weak
# cipher is refused here, before any tier is rendered, instead of being
# found by a scan of a live listener.  DHE is in the profile but not in our
# default: it needs DH parameters the roles do not ship.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
)
INTERMEDIATE_CIPHERSUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
INTERMEDIATE_CURVES = ("X25519", "prime256v1", "secp384r1")
# Methods a retry may repeat when idempotent_only is set: everything but
# these (NGINX's definition of non-idempotent).
NON_IDEMPOTENT = ("POST", "PATCH", "LOCK")


class PolicyError(ValueError):
    """A policy value is invalid: `field` is its dotted path in the policy."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"traffic policy: {field}: {problem}")


# --- values --------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def duration_ms(field: str, value: Any) -> int:
    """'3s', '300ms', '5m', '1h' -> milliseconds; anything else is refused."""
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise PolicyError(field, f"{value!r} is not a duration such as 300ms, 3s, 5m or 1h")
    return int(match[1]) * _UNIT_MS[match[2]]


def format_duration(ms: int) -> str:
    """Milliseconds as every tier reads them: whole seconds as `Ns`, else `Nms`."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_SIZE = re.compile(r"^(\d+)([km]?)$")
_UNIT_BYTES = {"": 1, "k": 1024, "m": 1024 * 1024}


def size_bytes(field: str, value: Any) -> int:
    """'10m', '512k', '4096' -> bytes (NGINX's size units); anything else is refused."""
    match = _SIZE.match(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if not match:
        raise PolicyError(field, f"{value!r} is not a size such as 512k or 10m")
    return int(match[1]) * _UNIT_BYTES[match[2]]


def format_size(size: int) -> str:
    """Bytes as NGINX reads them: whole MiB as `Nm`, whole KiB as `Nk`, else bytes."""
    for unit in ("m", "k"):
        if size and size % _UNIT_BYTES[unit] == 0:
            return f"{size // _UNIT_BYTES[unit]}{unit}"
    return str(size)


def _int(field: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(field, f"must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise PolicyError(field, f"must be {bounds}, got {value}")
    return value


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(field, f"must be true or false, got {value!r}")
    return value


def _str(field: str, value: Any, pattern: str, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise PolicyError(field, f"{value!r} is not {what}")
    return value


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PolicyError(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(field: str, value: Any) -> list:
    if not isinstance(value, list):
        raise PolicyError(field, f"must be a list, got {value!r}")
    return value


def _mapping(field: str, value: Any, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise PolicyError(field, f"must be a mapping, got {value!r}")
    for key in value:
        if key not in known:
            raise PolicyError(f"{field}.{key}" if field else str(key),
                              f"unknown key (known: {', '.join(known)})")
    for key in required:
        if key not in value:
            raise PolicyError(f"{field}.{key}" if field else key, "is required")
    return value


# Header and cookie tokens (RFC 7230 / 6265 without the exotic characters).
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_PATH = r"/[A-Za-z0-9._~/-]*"
_CIPHER = r"[A-Za-z0-9_-]+"


# --- the model -----------------------------------------------------------------

@dataclass(frozen=True)
class RateLimit:
    """Per client: `per_second` requests a second, plus `burst` served at
    once above it (a token bucket of burst + 1 refilled at per_second)."""

    per_second: int
    burst: int

    @property
    def interval_us(self) -> int:
        """Time one request's token takes to refill (the emission interval)."""
        return 1_000_000 // self.per_second

    @property
    def tolerance_us(self) -> int:
        """How far ahead of schedule a client may be: the burst's worth of intervals."""
        return self.burst * self.interval_us


@dataclass(frozen=True)
class Timeouts:
    connect_ms: int
    response_ms: int
    tunnel_ms: int | None  # upgraded (WebSocket) connections: idle time; None = not upgraded


@dataclass(frozen=True)
class Retries:
    attempts: int  # further servers after the first; 0 = never retried
    on: tuple[str, ...]
    idempotent_only: bool
    budget_ms: int


@dataclass(frozen=True)
class TrafficClass:
    name: str
    paths: tuple[str, ...]
    workload: str
    balance: str
    rate: RateLimit | None
    timeouts: Timeouts
    retries: Retries
    canary: bool
    websocket: bool
    streaming: bool
    sticky_cookie: str | None  # cookie name, for balance sticky_cookie


@dataclass(frozen=True)
class Canary:
    share: int
    ab_header: str
    ab_cookie: str
    ab_value: str


@dataclass(frozen=True)
class ClientLimits:
    connections_per_client: int
    idle_timeout_ms: int
    header_timeout_ms: int
    max_body_bytes: int


@dataclass(frozen=True)
class TlsProfile:
    min_version: str
    ciphers: tuple[str, ...]
    ciphersuites: tuple[str, ...]
    curves: tuple[str, ...]

    @property
    def versions(self) -> tuple[str, ...]:
        return TLS_VERSIONS[TLS_VERSIONS.index(self.min_version):]


@dataclass(frozen=True)
class SecurityHeaders:
    hsts_max_age: int
    hsts_include_subdomains: bool
    frame_options: str
    content_type_options: str
    referrer_policy: str
    content_security_policy: str

    @property
    def hsts(self) -> str:
        return f"max-age={self.hsts_max_age}" + ("; includeSubDomains" if self.hsts_include_subdomains else "")

    def common(self) -> dict[str, str]:
        """Headers on every response (HSTS aside: HTTPS only), in a fixed order."""
        headers = {"X-Frame-Options": self.frame_options, "X-Content-Type-Options": self.content_type_options,
                   "Referrer-Policy": self.referrer_policy}
        if self.content_security_policy:
            headers["Content-Security-Policy"] = self.content_security_policy
        return headers


@dataclass(frozen=True)
class Policy:
    tiers: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    client: ClientLimits
    tls: TlsProfile
    headers: SecurityHeaders
    canary: Canary
    classes: tuple[TrafficClass, ...]
    raw: dict  # the merged document it was built from (for replace/edit)

    def traffic_class(self, name: str) -> TrafficClass:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise PolicyError(f"classes.{name}", f"unknown class (known: {', '.join(c.name for c in self.classes)})")

    def routes(self) -> list[tuple[str, TrafficClass]]:
        """(path prefix, class), longest prefix first: the order a first-match
        tier (HAProxy, Istio) must try them in to pick what NGINX picks."""
        pairs = [(path, cls) for cls in self.classes for path in cls.paths]
        return sorted(pairs, key=lambda pair: (-len(pair[0]), pair[0]))

    def replace(self, field: str, value: Any) -> Policy:
        """A validated copy with one value changed, e.g. ("classes.api.rate.per_second", 20)."""
        return parse(set_path(self.raw, field, value))


# --- parsing and validation ------------------------------------------------------

_TOP = ("version", "tiers", "trusted_proxies", "client", "tls", "headers", "canary", "defaults", "classes")
_CLASS = ("paths", "workload", "balance", "rate", "timeouts", "retries", "canary", "websocket", "streaming",
          "sticky_cookie")
_DEFAULTS = tuple(k for k in _CLASS if k not in ("paths", "workload"))


def deep_merge(base: Any, override: Any) -> Any:
    """Overrides merge key by key into mappings; anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def set_path(document: dict, field: str, value: Any) -> dict:
    """A copy of `document` with the dotted `field` set to `value`."""
    keys = field.split(".")
    out = copy.deepcopy(document)
    node = out
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            if key not in node and keys[0] == "classes" and i == 1:
                raise PolicyError(".".join(keys[:i + 1]), "unknown class")
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return out


def _rate(field: str, value: Any) -> RateLimit | None:
    if value is None:
        return None
    value = _mapping(field, value, ("per_second", "burst"), ("per_second", "burst"))
    rate = RateLimit(_int(f"{field}.per_second", value["per_second"], 1, 1_000_000),
                     _int(f"{field}.burst", value["burst"], 0))
    # HAProxy keeps a client's schedule in a 32-bit microsecond clock: a
    # bucket must drain within half of its range (~35 minutes).
    if rate.tolerance_us >= 2**31:
        raise PolicyError(f"{field}.burst", f"{rate.burst} at {rate.per_second}/s takes longer than 35 minutes to drain")
    return rate


def _timeouts(field: str, value: Any) -> Timeouts:
    value = _mapping(field, value, ("connect", "response", "tunnel"), ("connect", "response"))
    timeouts = Timeouts(duration_ms(f"{field}.connect", value["connect"]),
                        duration_ms(f"{field}.response", value["response"]),
                        duration_ms(f"{field}.tunnel", value["tunnel"]) if value.get("tunnel") else None)
    for key, ms in (("connect", timeouts.connect_ms), ("response", timeouts.response_ms)):
        if ms < 1:
            raise PolicyError(f"{field}.{key}", "must be longer than 0")
    return timeouts


def _retries(field: str, value: Any) -> Retries:
    # Not `on`: YAML 1.1 reads that key as the boolean true.
    value = _mapping(field, value, ("attempts", "conditions", "idempotent_only", "budget"),
                     ("attempts", "conditions", "idempotent_only", "budget"))
    on = _list(f"{field}.conditions", value["conditions"])
    for i, condition in enumerate(on):
        _choice(f"{field}.conditions[{i}]", str(condition), RETRY_ON)
    if len(set(map(str, on))) != len(on):
        raise PolicyError(f"{field}.conditions", "lists a condition twice")
    retries = Retries(_int(f"{field}.attempts", value["attempts"], 0, 10), tuple(str(c) for c in on),
                      _bool(f"{field}.idempotent_only", value["idempotent_only"]),
                      duration_ms(f"{field}.budget", value["budget"]))
    if retries.attempts and not retries.on:
        raise PolicyError(f"{field}.conditions", "is empty while attempts > 0: say which failures may be retried")
    return retries


def _class(name: str, value: Any, defaults: dict) -> TrafficClass:
    field = f"classes.{name}"
    _str(field, name, r"[a-z][a-z0-9_]{0,30}", "a class name (lower case letters, digits, _)")
    value = deep_merge(defaults, _mapping(field, value, _CLASS, ("paths", "workload")))
    paths = _list(f"{field}.paths", value["paths"])
    if not paths:
        raise PolicyError(f"{field}.paths", "must list at least one path prefix")
    for i, path in enumerate(paths):
        _str(f"{field}.paths[{i}]", path, _PATH, "a path prefix starting with / (letters, digits, ._~-/)")
    balance = _choice(f"{field}.balance", value.get("balance"), BALANCES)
    cookie = value.get("sticky_cookie")
    if balance == "sticky_cookie":
        _str(f"{field}.sticky_cookie", cookie, _TOKEN, "a cookie name (needed by balance sticky_cookie)")
    elif cookie is not None:
        raise PolicyError(f"{field}.sticky_cookie", "is only used with balance sticky_cookie")
    cls = TrafficClass(
        name=name, paths=tuple(paths),
        workload=_choice(f"{field}.workload", value["workload"], WORKLOADS),
        balance=balance,
        rate=_rate(f"{field}.rate", value.get("rate")),
        timeouts=_timeouts(f"{field}.timeouts", value.get("timeouts")),
        retries=_retries(f"{field}.retries", value.get("retries")),
        canary=_bool(f"{field}.canary", value.get("canary")),
        websocket=_bool(f"{field}.websocket", value.get("websocket")),
        streaming=_bool(f"{field}.streaming", value.get("streaming")),
        sticky_cookie=cookie,
    )
    if cls.canary and cls.balance in STICKY:
        raise PolicyError(f"{field}.canary", f"a {cls.balance} class cannot take a canary share: the per-request "
                                             "dice would move a client between tracks (set canary: false)")
    if cls.websocket and cls.timeouts.tunnel_ms is None:
        raise PolicyError(f"{field}.timeouts.tunnel", "is required for a websocket class (idle time of an upgraded connection)")
    if not cls.websocket and cls.timeouts.tunnel_ms is not None:
        raise PolicyError(f"{field}.timeouts.tunnel", "is only used by websocket classes")
    return cls


def parse(document: Any) -> Policy:
    """Build and validate a Policy from the (merged) YAML document."""
    doc = _mapping("", document, _TOP, ("version", "tiers", "classes"))
    if doc["version"] != 1:
        raise PolicyError("version", f"must be 1, got {doc['version']!r}")
    tiers = _list("tiers", doc["tiers"])
    for i, tier in enumerate(tiers):
        _choice(f"tiers[{i}]", tier, TIERS)

    proxies = _list("trusted_proxies", doc.get("trusted_proxies", []))
    for i, cidr in enumerate(proxies):
        try:
            ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            raise PolicyError(f"trusted_proxies[{i}]", f"{cidr!r} is not an IP address or CIDR network "
                                                       "(host bits must be zero: 10.0.0.0/8, not 10.0.0.1/8)") from None

    c = _mapping("client", doc.get("client"), ("connections_per_client", "idle_timeout", "header_timeout", "max_body_size"),
                 ("connections_per_client", "idle_timeout", "header_timeout", "max_body_size"))
    client = ClientLimits(_int("client.connections_per_client", c["connections_per_client"], 1),
                          duration_ms("client.idle_timeout", c["idle_timeout"]),
                          duration_ms("client.header_timeout", c["header_timeout"]),
                          size_bytes("client.max_body_size", c["max_body_size"]))
    if client.max_body_bytes < 1:
        raise PolicyError("client.max_body_size", "must be at least 1 byte (NGINX reads 0 as no limit)")

    t = _mapping("tls", doc.get("tls"), ("min_version", "ciphers", "ciphersuites", "curves"),
                 ("min_version", "ciphers", "ciphersuites", "curves"))
    for key, allowed, kind in (("ciphers", INTERMEDIATE_CIPHERS, "an OpenSSL cipher name"),
                               ("ciphersuites", INTERMEDIATE_CIPHERSUITES, "an OpenSSL cipher name"),
                               ("curves", INTERMEDIATE_CURVES, "an OpenSSL group name")):
        for i, cipher in enumerate(_list(f"tls.{key}", t[key])):
            _str(f"tls.{key}[{i}]", cipher, _CIPHER, kind)
            if cipher not in allowed:
                raise PolicyError(f"tls.{key}[{i}]", f"{cipher!r} is not in Mozilla's intermediate profile; "
                                                     f"allowed: {', '.join(allowed)}")
    tls = TlsProfile(_choice("tls.min_version", t["min_version"], TLS_VERSIONS), tuple(t["ciphers"]),
                     tuple(t["ciphersuites"]), tuple(t["curves"]))
    if not tls.curves:
        raise PolicyError("tls.curves", "must name at least one key-exchange group")
    if tls.min_version == "TLSv1.2" and not tls.ciphers:
        raise PolicyError("tls.ciphers", "must name at least one TLS 1.2 cipher while min_version is TLSv1.2")

    h = _mapping("headers", doc.get("headers"), tuple(SecurityHeaders.__dataclass_fields__),
                 tuple(SecurityHeaders.__dataclass_fields__))
    value = r"[^\"\n\r;]*(;[^\"\n\r;]*)*"  # no quotes or line breaks: every tier quotes these
    headers = SecurityHeaders(
        _int("headers.hsts_max_age", h["hsts_max_age"], 0),
        _bool("headers.hsts_include_subdomains", h["hsts_include_subdomains"]),
        _choice("headers.frame_options", h["frame_options"], ("DENY", "SAMEORIGIN")),
        _choice("headers.content_type_options", h["content_type_options"], ("nosniff",)),
        _str("headers.referrer_policy", h["referrer_policy"], r"[a-z-]+(, *[a-z-]+)*", "a Referrer-Policy value"),
        _str("headers.content_security_policy", h["content_security_policy"], value,
             "a header value without quotes or line breaks"),
    )

    k = _mapping("canary", doc.get("canary"), ("share", "ab_header", "ab_cookie", "ab_value"),
                 ("share", "ab_header", "ab_cookie", "ab_value"))
    canary = Canary(_int("canary.share", k["share"], 0, 100),
                    _str("canary.ab_header", k["ab_header"], _TOKEN, "an HTTP header name"),
                    _str("canary.ab_cookie", k["ab_cookie"], _TOKEN, "a cookie name"),
                    _str("canary.ab_value", k["ab_value"], r"[A-Za-z0-9_.-]+", "a plain token"))

    defaults = _mapping("defaults", doc.get("defaults", {}), _DEFAULTS)
    classes_doc = _mapping("classes", doc["classes"], tuple(doc["classes"]) if isinstance(doc["classes"], dict) else ())
    if not classes_doc:
        raise PolicyError("classes", "must define at least one class")
    classes = tuple(_class(name, value, defaults) for name, value in classes_doc.items())

    owner: dict[str, str] = {}
    for cls in classes:
        for path in cls.paths:
            if path in owner:
                raise PolicyError(f"classes.{cls.name}.paths", f"{path} is already a path of class {owner[path]}: "
                                                               "a path belongs to one class")
            owner[path] = cls.name
    policy = Policy(tuple(tiers), tuple(str(p) for p in proxies), client, tls, headers, canary, classes,
                    copy.deepcopy(doc))
    _check_tiers(policy)
    return policy


# Each tier's renderer registers what it cannot express (`check`) when it is
# imported; the package imports every renderer (traffic/__init__.py), so a
# policy is checked for every tier it names however it was loaded.  The
# model itself knows no renderer.
TIER_CHECKS: dict[str, Callable[[Policy], None]] = {}


def _check_tiers(policy: Policy) -> None:
    """What a tier cannot do at all is refused here, for every tier at once."""
    for tier in policy.tiers:
        TIER_CHECKS[tier](policy)


def read(path: Path | str = POLICY_FILE) -> dict:
    path = Path(path)
    try:
        return copy.deepcopy(_read(path, path.stat().st_mtime_ns))
    except OSError as exc:
        raise PolicyError("(file)", f"cannot read {path}: {exc.strerror}") from None


@functools.lru_cache(maxsize=8)
def _read(path: Path, _mtime_ns: int) -> dict:
    """The file parsed once per version of it: a role's checks load the
    policy in task after task, each time with other overrides."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PolicyError("(file)", f"{path} is not valid YAML: {exc}") from None


def plain(value: Any) -> Any:
    """`value` as plain dicts, lists, strings and numbers.  Ansible hands a
    filter its variables as lazily templated containers and tagged strings:
    copying those (as merging and the Policy record do) templates them
    again at every level, which made loading the policy the largest cost of
    a converge."""
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def load(path: Path | str = POLICY_FILE, overrides: dict | None = None) -> Policy:
    """The policy file with per-environment overrides merged in, validated.

    Overrides merge key by key (`{classes: {api: {rate: {per_second: 20}}}}`
    changes one number); they may not add classes, so a typo in a class name
    is refused instead of creating a class."""
    document = read(path)
    overrides = plain(overrides)
    if overrides:
        _mapping("(overrides)", overrides, _TOP)
        for name in (overrides.get("classes") or {}):
            if name not in (document.get("classes") or {}):
                raise PolicyError(f"classes.{name}", f"unknown class in the overrides (known: "
                                                     f"{', '.join(document.get('classes') or {})}); add a class "
                                                     f"to {Path(path).name} itself")
        document = deep_merge(document, overrides)
    return parse(document)


def problem(path: Path | str = POLICY_FILE, overrides: dict | None = None) -> str:
    """'' when the policy (with `overrides`) is valid, else the message naming
    the field: what the roles' validation plays assert on."""
    try:
        load(path, overrides or {})
    except PolicyError as exc:
        return str(exc)
    return ""


def edit(field: str, value: Any, path: Path | str = POLICY_FILE) -> Policy:
    """Change one value in the policy file, keeping its comments and layout.

    The whole policy is validated with the new value before the file is
    written; a refused value leaves the file untouched."""
    from ruamel.yaml import YAML

    path = Path(path)
    rt = YAML()
    rt.preserve_quotes = True
    # The file's own layout: lists indented under their key, long lines kept.
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 4096
    document = rt.load(path.read_text())
    policy = parse(set_path(read(path), field, value))  # raises before anything is written
    node = document
    keys = field.split(".")
    for key in keys[:-1]:
        if key not in node:
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    with path.open("w") as out:
        rt.dump(document, out)
    return policy
