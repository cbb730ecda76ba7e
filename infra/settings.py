"""Typed, validated settings: the one place stack config becomes Python values.

Each stack config key is declared once, on the dataclass field that holds it:

    min_replicas: int = setting("MinReplicas", at_least(1))

The field's type says how the key is read (`int` with `require_int`, `X | None`
as optional, a `Literal` as one of its values), the checks say what it may be.
Loading (`load`), validation (`__post_init__`) and every error message
(`config automata:apiMinReplicas: must be >= 1, got 0`) come from that one
declaration; rules between fields (`check`) name the keys through it too.

Pulumi.yaml gives the CLI each key's type, default and description.  Defaults
live only there (the CLI applies them; infra/offline.py does the same), so
required keys have no default here, and tests/pulumi/test_pulumi_settings.py
checks that Pulumi.yaml declares exactly these keys with these types.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import pulumi

from infra import naming
from monitoring import rules as alert_rules
from traffic import model as traffic_model

Platform = Literal["kubernetes", "docker"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
# DISABLE is not offered: plain text inside the namespace is never wanted.
MtlsMode = Literal["STRICT", "PERMISSIVE"]


class ConfigError(pulumi.RunError):
    """A stack config value is invalid; RunError prints without a traceback."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config {key_name(key)}: {problem}")


def key_name(key: str) -> str:
    """The fully qualified key, as users type it in `pulumi config set`."""
    return f"{pulumi.get_project()}:{key}"


class Invalid(ValueError):
    """A check's verdict on one value; the caller knows the key (ConfigError)."""


Check = Callable[[Any], Any]  # raises Invalid; a return value is ignored


# --- checks ------------------------------------------------------------------

def rule(ok: Callable[[Any], Any], problem: str) -> Check:
    """A check that refuses what `ok` does not accept; `problem` may say {value}."""
    def check(value: Any) -> None:
        if not ok(value):
            raise Invalid(problem.format(value=value))
    return check


def at_least(low: int) -> Check:
    return rule(lambda v: v >= low, f"must be >= {low}, got {{value}}")


def between(low: float, high: float, unit: str) -> Check:
    return rule(lambda v: low <= v <= high, f"must be between {low} and {high} {unit}, got {{value}}")


def one_of(choices: tuple[str, ...]) -> Check:
    return rule(lambda v: v in choices, f"must be one of {', '.join(choices)}, got {{value!r}}")


def matches(pattern: str, what: str) -> Check:
    return rule(lambda v: re.fullmatch(pattern, v), f"{{value!r}} {what}")


def each(item_check: Check) -> Check:
    return lambda value: [item_check(item) for item in value]


def unique(value: tuple) -> None:
    for item in value:
        if value.count(item) > 1:
            raise Invalid(f"lists {item!r} twice")


PERCENT = between(1, 100, "(percent)")
# autoscaling/v2 caps stabilisation windows at one hour.
WINDOW = between(0, 3600, "seconds")
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?"
_HOST = r"(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
NAMESPACE = matches(_LABEL, "is not a valid namespace name (RFC 1123 label)")
SECRET_NAME = "is not a valid Secret name"
DNS_NAME = matches(_HOST, "is not a lower-case DNS name such as app.example.com or *.example.com")
DURATION = matches(r"[0-9]+(ms|s|m|h|d|w|y)", "needs a unit, like 15d, 12h or 30s")
AUDIENCES = rule(lambda v: v and all(a.strip() for a in v),
                 "must be a non-empty list of audience strings (a token for another service must not pass)")
HTTPS_URL = rule(lambda v: urlsplit(v).scheme == "https" and urlsplit(v).hostname,
                 "{value!r} must be an https:// URL (tokens and keys are never fetched in clear text)")


def pinned_image(ref: str) -> None:
    """An image must name an immutable version: a tag other than latest, or a digest."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if not digest and not tag:
        raise Invalid(f"image {ref!r} has no tag; pin a version such as {name}:1.0.0")
    if tag == "latest":
        raise Invalid(f"image {ref!r} uses :latest, which makes rollouts unrepeatable; pin a version")
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise Invalid(f"image {ref!r} has a malformed digest")


def host_port(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise Invalid(f"{raw!r} must be HOST:PORT, e.g. jaeger-collector.observability.svc.cluster.local:4317")
    if not re.fullmatch(_HOST, host) or host.startswith("*"):
        raise Invalid(f"{host!r} is not a host name")
    if not 1 <= int(port) <= 65535:
        raise Invalid(f"port {port} is not between 1 and 65535")
    return host, int(port)


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpu_millis(quantity: str) -> float:
    match = _CPU.match(quantity)
    if not match:
        raise Invalid(f"{quantity!r} is not a CPU quantity such as 250m or 1")
    return float(match[1]) * (1 if match[2] else 1000)


def memory_bytes(quantity: str) -> int:
    match = _MEMORY.match(quantity)
    if not match:
        raise Invalid(f"{quantity!r} is not a memory quantity such as 256Mi or 1Gi")
    return int(match[1]) * _MEMORY_FACTORS[match[2]]


# --- parsers: a raw config value to the field's value ---------------------------

def int_or_percent(value: str) -> int | str:
    """maxSurge/maxUnavailable are IntOrString in Kubernetes: '1' or '25%'."""
    match = re.fullmatch(r"(\d+)(%?)", value.strip())
    if not match:
        raise Invalid(f"{value!r} must be a whole number or a percentage such as 25%")
    if match[2]:
        if int(match[1]) > 100:
            raise Invalid(f"{value!r} is more than 100%")
        return f"{int(match[1])}%"
    return int(match[1])


def _traffic_policy(overrides: dict) -> traffic_model.Policy:
    """traffic/policy.yml with the stack's overrides; a bad value names the policy field."""
    try:
        return traffic_model.load(overrides=overrides)
    except traffic_model.PolicyError as exc:
        raise Invalid(str(exc)) from None


def _alert_thresholds(overrides: dict) -> dict:
    """monitoring/alerts.yml with the stack's overrides, checked."""
    source = "overrides"
    try:
        return alert_rules.load(overrides, source=source)
    except alert_rules.ThresholdError as exc:
        raise Invalid(str(exc).removeprefix(f"{source}: ")) from None


# --- readers: how a key comes out of the stack config ------------------------------

@dataclass(frozen=True)
class Reader:
    # The type Pulumi.yaml declares for such a key ({} for an untyped object).
    pulumi_type: dict
    get: Callable[[pulumi.Config, str], Any]  # may raise Invalid


def _number(config: pulumi.Config, key: str) -> float:
    # Pulumi project config has no number type; fractional values arrive as strings.
    raw = config.require(key)
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"{raw!r} is not a number") from None


def _strings(config: pulumi.Config, key: str) -> tuple[str, ...]:
    value = config.require_object(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"must be a list of strings, got {value!r}")
    return tuple(value)


def _labels(config: pulumi.Config, key: str) -> dict[str, str]:
    value = config.require_object(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise Invalid(f"must map label names to strings, got {value!r}")
    return value


def _secret(config: pulumi.Config, key: str) -> pulumi.Output[str] | None:
    # Read raw only to learn whether it is set; the value itself stays a secret.
    return config.require_secret(key) if pulumi.runtime.get_config(config.full_key(key)) else None


STRING = Reader({"type": "string"}, pulumi.Config.require)
OBJECT = Reader({}, lambda config, key: config.get_object(key) or {})
SECRET = Reader({"type": "string"}, _secret)
_BY_TYPE: dict[Any, Reader] = {
    str: STRING,
    int: Reader({"type": "integer"}, pulumi.Config.require_int),
    bool: Reader({"type": "boolean"}, pulumi.Config.require_bool),
    float: Reader({"type": "string"}, _number),
    tuple[str, ...]: Reader({"type": "array", "items": {"type": "string"}}, _strings),
    dict[str, str]: Reader({}, _labels),
}


def _optional(reader: Reader) -> Reader:
    # Unset or empty means None (no canary image, no request timeout).
    return Reader(reader.pulumi_type, lambda config, key: reader.get(config, key) if config.get(key) else None)


# --- declarations ----------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    name: str  # as in Pulumi.yaml; a per-class key adds the class in front (api + MinReplicas)
    checks: tuple[Check, ...]
    reader: Reader | None  # None until declared(): then from the field's type unless given
    parse: Callable[[Any], Any] | None  # the raw value to the field's value
    required: bool = True  # False for `X | None`: unset is None


def setting(name: str, *checks: Check, read: Reader | None = None, parse: Callable[[Any], Any] | None = None) -> Any:
    """Declare the field's stack config key and the checks its value must pass."""
    return field(metadata={"key": Key(name, checks, read, parse)})


def per_class() -> Any:
    """A section per traffic class, whose keys start with the class name."""
    return field(metadata={"per_class": True})


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _complete(key: Key, hint: Any) -> Key:
    """The key with the reader its field's type implies (and one_of for a Literal)."""
    if key.reader or key.parse:
        return replace(key, reader=key.reader or STRING)
    if typing.get_origin(hint) is Literal:
        return replace(key, reader=STRING, checks=(one_of(typing.get_args(hint)), *key.checks))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (base,) = (a for a in typing.get_args(hint) if a is not type(None))
        return replace(key, reader=_optional(_BY_TYPE[base]), required=False)
    return replace(key, reader=_BY_TYPE[hint])


@cache
def declared(cls: type) -> dict[str, Key]:
    """{field name: its key} of a section's own keys."""
    return {f.name: _complete(f.metadata["key"], _hints(cls)[f.name]) for f in fields(cls) if "key" in f.metadata}


@dataclass(frozen=True)
class Section:
    """A group of settings whose fields declare their keys with `setting`."""

    def __post_init__(self) -> None:
        for name, key in declared(type(self)).items():
            if getattr(self, name) is not None:
                for check in key.checks:
                    self.verify(name, check)
        self.check()

    def check(self) -> None:
        """Rules between fields, once each field has passed its own checks."""

    def prefix(self) -> str:
        return ""

    def key(self, name: str) -> str:
        """The config key of field `name`, as in Pulumi.yaml."""
        return self.prefix() + declared(type(self))[name].name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ConfigError(self.key(name), problem)

    def verify(self, name: str, check: Check) -> None:
        try:
            check(getattr(self, name))
        except Invalid as exc:
            self.fail(name, str(exc))

    def not_above(self, low: str, high: str) -> None:
        if getattr(self, low) > getattr(self, high):
            self.fail(low, f"{getattr(self, low)} is greater than {key_name(self.key(high))} ({getattr(self, high)})")

    def within_limit(self, request: str, limit: str, measure: Callable[[str], float]) -> None:
        if measure(getattr(self, request)) > measure(getattr(self, limit)):
            self.fail(request, f"{getattr(self, request)} is above the limit {getattr(self, limit)}")


# --- one section per concern ------------------------------------------------------

@dataclass(frozen=True)
class ClusterSettings(Section):
    # Which cluster the stack acts on: a context of the kubeconfig file
    # (`kubeconfig`, else KUBECONFIG or ~/.kube/config).  With neither, the
    # provider takes the current context, whatever it is at the time of
    # `pulumi up`: Settings.check allows that only on unprotected stacks.
    kube_context: str | None = setting("kubeContext")
    kubeconfig: str | None = setting("kubeconfig")
    namespace: str = setting("namespace", NAMESPACE)
    service_type: ServiceType = setting("serviceType")

    def names_a_cluster(self) -> bool:
        return bool(self.kube_context or self.kubeconfig)


@dataclass(frozen=True)
class ImageSettings(Section):
    stable: str = setting("image", pinned_image)
    canary: str | None = setting("canaryImage", pinned_image)  # None: no canary track
    canary_replicas: int = setting("canaryReplicas")

    def tracks(self) -> tuple[naming.Track, ...]:
        return ("stable", "canary") if self.canary else ("stable",)

    def check(self) -> None:
        if self.canary is not None:
            if self.canary == self.stable:
                self.fail("canary", f"is the same as {self.key('stable')}; a canary needs the new version")
            self.verify("canary_replicas", at_least(1))


@dataclass(frozen=True)
class WorkloadSettings(Section):
    """Per traffic class: config keys are the class name + the field's, e.g. aiMaxReplicas."""

    traffic_class: str
    min_replicas: int = setting("MinReplicas", at_least(1))
    max_replicas: int = setting("MaxReplicas")
    cpu_request: str = setting("CpuRequest", cpu_millis)
    cpu_limit: str = setting("CpuLimit", cpu_millis)
    memory_request: str = setting("MemoryRequest", memory_bytes)
    memory_limit: str = setting("MemoryLimit", memory_bytes)
    grace_period: int = setting("GracePeriod", at_least(0))
    # Longest request the class serves (API, AI); None for WebSocket, whose
    # connections are long-lived and get closed (1001) on drain instead.
    # Pulumi.yaml declares the key only for the classes that have one.
    request_timeout: int | None = setting("RequestTimeout", at_least(1))

    def prefix(self) -> str:
        return self.traffic_class

    def check(self) -> None:
        self.not_above("min_replicas", "max_replicas")
        self.within_limit("cpu_request", "cpu_limit", cpu_millis)
        self.within_limit("memory_request", "memory_limit", memory_bytes)


@dataclass(frozen=True)
class ScalingSettings(Section):
    enabled: bool = setting("autoscaling")  # automata-lb's auto-scale / disable-auto-scale switch
    replicas: int = setting("replicas", at_least(1))  # pinned replicas per class while autoscaling is off
    cpu_target: int = setting("cpuTarget", PERCENT)
    memory_target: int = setting("memoryTarget", PERCENT)
    scale_up_window: int = setting("scaleUpWindow", WINDOW)
    scale_down_window: int = setting("scaleDownWindow", WINDOW)
    scale_up_percent: int = setting("scaleUpPercent", at_least(1))
    scale_up_pods: int = setting("scaleUpPods", at_least(1))
    scale_down_percent: int = setting("scaleDownPercent", PERCENT)
    policy_period: int = setting("scalePolicyPeriod", between(1, 1800, "seconds"))


@dataclass(frozen=True)
class RolloutSettings(Section):
    max_surge: int | str = setting("maxSurge", parse=int_or_percent)
    max_unavailable: int | str = setting("maxUnavailable", parse=int_or_percent)
    min_ready_seconds: int = setting("minReadySeconds", at_least(0))
    pre_stop_seconds: int = setting("preStopSeconds", at_least(0))
    disruption_budget: int = setting("disruptionBudget", at_least(1))  # PDB maxUnavailable per class

    def drain_seconds(self, workload: WorkloadSettings) -> int:
        """Time the backend (and its sidecar) has between SIGTERM and SIGKILL:
        the pod's grace period less the preStop sleep that comes first."""
        return workload.grace_period - self.pre_stop_seconds

    def check(self) -> None:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            self.fail("max_unavailable", f"{self.key('max_surge')} and {self.key('max_unavailable')} cannot both be 0: "
                                         "the rollout could never progress")


@dataclass(frozen=True)
class PlacementSettings(Section):
    # DoNotSchedule on nodes needs at least as many nodes as replicas; dev
    # clusters with one node use ScheduleAnyway.
    strict_node_spread: bool = setting("strictNodeSpread")


@dataclass(frozen=True)
class RuntimeSettings(Section):
    """The backend's tuning knobs (pools, breaker, timeouts), handed to it through a ConfigMap."""

    max_connections: int = setting("maxConnections", at_least(1))
    pool_size: int = setting("poolSize", at_least(1))
    pool_timeout: int = setting("poolTimeout", at_least(1))
    failure_threshold: int = setting("circuitBreakerFailureThreshold", at_least(1))
    recovery_timeout: int = setting("circuitBreakerRecoveryTimeout", at_least(1))

    def check(self) -> None:
        self.not_above("pool_size", "max_connections")


@dataclass(frozen=True)
class LocalSettings(Section):
    """The `local` stack: a Compose-style environment for one machine, on a Docker/Podman host."""

    backends: int = setting("localBackends", at_least(1))
    nginx_image: str = setting("localNginxImage", pinned_image)
    haproxy_image: str = setting("localHaproxyImage", pinned_image)
    prometheus_image: str = setting("localPrometheusImage", pinned_image)
    grafana_image: str = setting("localGrafanaImage", pinned_image)
    nginx_exporter_image: str = setting("localNginxExporterImage", pinned_image)


@dataclass(frozen=True)
class CircuitBreakerSettings(Section):
    """DestinationRule connection pool and outlier detection (the mesh's circuit breaker)."""

    max_connections: int = setting("meshMaxConnections", at_least(1))
    max_pending_requests: int = setting("meshMaxPendingRequests", at_least(1))
    max_requests: int = setting("meshMaxRequests", at_least(1))
    consecutive_5xx: int = setting("outlierConsecutive5xxErrors", at_least(1))
    interval: int = setting("outlierInterval", at_least(1))  # seconds between ejection sweeps
    # Seconds; grows with each ejection of the same host.
    base_ejection_time: int = setting("outlierBaseEjectionTime", at_least(1))
    max_ejection_percent: int = setting("outlierMaxEjectionPercent", PERCENT)


@dataclass(frozen=True)
class JwtSettings(Section):
    issuer: str = setting("jwtIssuer", HTTPS_URL)
    jwks_uri: str = setting("jwtJwksUri", HTTPS_URL)
    audiences: tuple[str, ...] = setting("jwtAudiences", AUDIENCES)


@dataclass(frozen=True)
class TracingSettings(Section):
    collector: str = setting("tracingCollector", host_port)  # HOST:PORT
    sampling: float = setting("tracingSampling", between(0, 100, "(percent)"))  # percent of requests traced

    @property
    def collector_host(self) -> str:
        return host_port(self.collector)[0]

    @property
    def collector_port(self) -> int:
        return host_port(self.collector)[1]


@dataclass(frozen=True)
class MeshSettings(Section):
    """The Istio mesh (docs/mesh.md): install, edge, routing, security, telemetry."""

    enabled: bool = setting("mesh")  # the namespace joins the mesh and gets its objects
    install: bool = setting("meshInstall")  # Helm-install Istio; false uses one already in the cluster
    cni: bool = setting("meshCni")  # Istio CNI: pods need no NET_ADMIN init container
    hosts: tuple[str, ...] = setting("meshHosts", rule(bool, "must name at least one host the gateway serves"),
                                     each(DNS_NAME), unique)
    tls_secret: str = setting("meshTlsSecret", matches(_SUBDOMAIN, SECRET_NAME))
    gateway_namespace: str = setting("meshGatewayNamespace", NAMESPACE)
    gateway_min_replicas: int = setting("meshGatewayMinReplicas", at_least(1))
    gateway_max_replicas: int = setting("meshGatewayMaxReplicas")
    # Canary share, A/B rule, retries and timeouts are the traffic policy's
    # (Settings.traffic, traffic/policy.yml).
    circuit_breaker: CircuitBreakerSettings
    mtls_mode: MtlsMode = setting("mtlsMode")
    jwt: JwtSettings
    tracing: TracingSettings

    def check(self) -> None:
        self.not_above("gateway_min_replicas", "gateway_max_replicas")


@dataclass(frozen=True)
class MonitoringSettings(Section):
    enabled: bool = setting("monitoring")
    install: bool = setting("monitoringInstall")
    # Also the namespace the mesh lets scrape the backend.
    namespace: str = setting("monitoringNamespace", NAMESPACE)
    retention: str = setting("monitoringRetention", DURATION)
    storage_size: str = setting("monitoringStorageSize", memory_bytes)
    scrape_interval: str = setting("monitoringScrapeInterval", DURATION)
    selector_labels: dict[str, str] = setting("monitoringSelectorLabels")
    # monitoring/alerts.yml with the stack's alertOverrides, checked.
    alert_thresholds: dict = setting("alertOverrides", read=OBJECT, parse=_alert_thresholds)
    grafana_admin_secret: str = setting("grafanaAdminSecret", matches(_LABEL, SECRET_NAME))
    # A Pulumi secret; None when the Secret is managed outside Pulumi.
    grafana_admin_password: pulumi.Output[str] | None = setting("grafanaAdminPassword", read=SECRET)


@dataclass(frozen=True)
class Settings(Section):
    platform: Platform = setting("platform")
    # Production-like: automata-lb refuses capacity drops without an explicit
    # flag and asks before any change; the cluster must be named.
    protected: bool = setting("protected")
    cluster: ClusterSettings
    images: ImageSettings
    workloads: tuple[WorkloadSettings, ...] = per_class()
    scaling: ScalingSettings
    rollout: RolloutSettings
    placement: PlacementSettings
    runtime: RuntimeSettings
    mesh: MeshSettings
    local: LocalSettings
    # The traffic policy (traffic/policy.yml) with this stack's trafficPolicy
    # overrides: routes, limits, timeouts, retries, canary, TLS, headers.
    traffic: traffic_model.Policy = setting("trafficPolicy", read=OBJECT, parse=_traffic_policy)
    monitoring: MonitoringSettings

    def check(self) -> None:
        if self.platform == "kubernetes" and self.protected and not self.cluster.names_a_cluster():
            self.cluster.fail("kube_context", f"the stack is protected ({key_name(self.key('protected'))}) and names "
                                              f"no cluster: set it, or {key_name(self.cluster.key('kubeconfig'))}, so "
                                              "`pulumi up` never acts on whatever context happens to be current")
        pre_stop = self.rollout.pre_stop_seconds
        for workload in self.workloads:
            drain = self.rollout.drain_seconds(workload)
            if drain <= 0:
                workload.fail("grace_period", f"{workload.grace_period}s leaves no time to drain after the "
                                              f"{pre_stop}s preStop ({key_name(self.rollout.key('pre_stop_seconds'))})")
            if workload.request_timeout is not None and drain < workload.request_timeout:
                workload.fail("grace_period", f"{workload.grace_period}s minus the {pre_stop}s preStop is shorter than "
                                              f"{key_name(workload.key('request_timeout'))} ({workload.request_timeout}s): "
                                              "in-flight requests would be killed")

    def workload(self, traffic_class: str) -> WorkloadSettings:
        return next(w for w in self.workloads if w.traffic_class == traffic_class)


# --- loading -------------------------------------------------------------------------

def _read(cls: type, config: pulumi.Config, prefix: str = "", **given: Any) -> Any:
    values = dict(given)
    for f in fields(cls):
        hint = _hints(cls)[f.name]
        if f.name in values:
            continue
        if f.name in declared(cls):
            key = declared(cls)[f.name]
            full = prefix + key.name
            try:
                raw = key.reader.get(config, full)
                values[f.name] = key.parse(raw) if key.parse else raw
            except Invalid as exc:
                raise ConfigError(full, str(exc)) from None
        elif f.metadata.get("per_class"):
            item = typing.get_args(hint)[0]
            values[f.name] = tuple(_read(item, config, c, traffic_class=c) for c in naming.TRAFFIC_CLASSES)
        else:
            values[f.name] = _read(hint, config)  # a nested section
    return cls(**values)


def load(config: pulumi.Config | None = None) -> Settings:
    """Read and validate the whole stack config; raises ConfigError on the first bad value."""
    return _read(Settings, config or pulumi.Config())


def declarations(cls: type = Settings, prefix: str = "") -> dict[str, Key]:
    """Every key the program reads, with its declaration: what Pulumi.yaml must agree with."""
    keys = {prefix + key.name: key for key in declared(cls).values()}
    for f in fields(cls):
        hint = _hints(cls)[f.name]
        if f.metadata.get("per_class"):
            for c in naming.TRAFFIC_CLASSES:
                keys.update(declarations(typing.get_args(hint)[0], c))
        elif isinstance(hint, type) and issubclass(hint, Section):
            keys.update(declarations(hint))
    return keys
