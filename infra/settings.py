"""Typed, validated settings: the one place stack config becomes Python values.

Defaults live only in Pulumi.yaml (the CLI applies them; the offline runner in
infra/offline.py does the same), so this module *requires* every key.  Each
concern is a frozen dataclass whose `__post_init__` rejects bad values with
a message naming the config key, so `pulumi up` fails before any resource is
registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import pulumi

from infra import naming
from monitoring import rules as alert_rules
from traffic import model as traffic_model

Platform = Literal["kubernetes", "docker"]
PLATFORMS = ("kubernetes", "docker")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
# DISABLE is not offered: plain text inside the namespace is never wanted.
MTLS_MODES = ("STRICT", "PERMISSIVE")


class ConfigError(pulumi.RunError):
    """A stack config value is invalid; RunError prints without a traceback."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config {key_name(key)}: {problem}")


def key_name(key: str) -> str:
    """The fully qualified key, as users type it in `pulumi config set`."""
    return f"{pulumi.get_project()}:{key}"


# --- checks shared by the dataclasses ----------------------------------------

def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(key, f"must be >= {low}, got {value}")


def _percent(key: str, value: int) -> None:
    if not 1 <= value <= 100:
        raise ConfigError(key, f"must be between 1 and 100 (percent), got {value}")


def check_image(key: str, ref: str) -> None:
    """An image must name an immutable version: a tag other than latest, or a digest."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if not digest and not tag:
        raise ConfigError(key, f"image {ref!r} has no tag; pin a version such as {name}:1.0.0")
    if tag == "latest":
        raise ConfigError(key, f"image {ref!r} uses :latest, which makes rollouts unrepeatable; pin a version")
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ConfigError(key, f"image {ref!r} has a malformed digest")


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpu_millis(key: str, quantity: str) -> float:
    match = _CPU.match(quantity)
    if not match:
        raise ConfigError(key, f"{quantity!r} is not a CPU quantity such as 250m or 1")
    return float(match[1]) * (1 if match[2] else 1000)


def memory_bytes(key: str, quantity: str) -> int:
    match = _MEMORY.match(quantity)
    if not match:
        raise ConfigError(key, f"{quantity!r} is not a memory quantity such as 256Mi or 1Gi")
    return int(match[1]) * _MEMORY_FACTORS[match[2]]


def int_or_percent(key: str, value: str) -> int | str:
    """maxSurge/maxUnavailable are IntOrString in Kubernetes: '1' or '25%'."""
    match = re.fullmatch(r"(\d+)(%?)", value.strip())
    if not match:
        raise ConfigError(key, f"{value!r} must be a whole number or a percentage such as 25%")
    if match[2]:
        if int(match[1]) > 100:
            raise ConfigError(key, f"{value!r} is more than 100%")
        return f"{int(match[1])}%"
    return int(match[1])


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


# --- one dataclass per concern -------------------------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def check_namespace(key: str, name: str) -> None:
    if not re.fullmatch(_LABEL, name):
        raise ConfigError(key, f"{name!r} is not a valid namespace name (RFC 1123 label)")


@dataclass(frozen=True)
class ClusterSettings:
    namespace: str
    service_type: str

    def __post_init__(self) -> None:
        check_namespace("namespace", self.namespace)
        if self.service_type not in SERVICE_TYPES:
            raise ConfigError("serviceType", f"must be one of {', '.join(SERVICE_TYPES)}, got {self.service_type!r}")


@dataclass(frozen=True)
class ImageSettings:
    stable: str
    canary: str | None  # None: no canary track
    canary_replicas: int

    def tracks(self) -> tuple[naming.Track, ...]:
        return ("stable", "canary") if self.canary else ("stable",)

    def __post_init__(self) -> None:
        check_image("image", self.stable)
        if self.canary is not None:
            check_image("canaryImage", self.canary)
            if self.canary == self.stable:
                raise ConfigError("canaryImage", "is the same as image; a canary needs the new version")
            _at_least("canaryReplicas", self.canary_replicas, 1)


@dataclass(frozen=True)
class WorkloadSettings:
    """Per traffic class: config keys are the class name + the field, e.g. aiMaxReplicas."""

    traffic_class: str
    min_replicas: int
    max_replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    grace_period: int
    # Longest request the class serves (API, AI); None for WebSocket, whose
    # connections are long-lived and get closed (1001) on drain instead.
    request_timeout: int | None

    def key(self, field: str) -> str:
        return f"{self.traffic_class}{field}"

    def __post_init__(self) -> None:
        _at_least(self.key("MinReplicas"), self.min_replicas, 1)
        if self.min_replicas > self.max_replicas:
            raise ConfigError(
                self.key("MinReplicas"),
                f"{self.min_replicas} is greater than {key_name(self.key('MaxReplicas'))} ({self.max_replicas})",
            )
        if cpu_millis(self.key("CpuRequest"), self.cpu_request) > cpu_millis(self.key("CpuLimit"), self.cpu_limit):
            raise ConfigError(self.key("CpuRequest"), f"{self.cpu_request} is above the limit {self.cpu_limit}")
        if memory_bytes(self.key("MemoryRequest"), self.memory_request) > memory_bytes(
            self.key("MemoryLimit"), self.memory_limit
        ):
            raise ConfigError(self.key("MemoryRequest"), f"{self.memory_request} is above the limit {self.memory_limit}")
        _at_least(self.key("GracePeriod"), self.grace_period, 0)
        if self.request_timeout is not None:
            _at_least(self.key("RequestTimeout"), self.request_timeout, 1)


@dataclass(frozen=True)
class ScalingSettings:
    enabled: bool  # automata-lb's auto-scale / disable-auto-scale switch
    replicas: int  # pinned replicas per class while autoscaling is off
    cpu_target: int
    memory_target: int
    scale_up_window: int
    scale_down_window: int
    scale_up_percent: int
    scale_up_pods: int
    scale_down_percent: int
    policy_period: int

    def __post_init__(self) -> None:
        _at_least("replicas", self.replicas, 1)
        _percent("cpuTarget", self.cpu_target)
        _percent("memoryTarget", self.memory_target)
        # autoscaling/v2 caps stabilisation windows at one hour.
        for key, value in (("scaleUpWindow", self.scale_up_window), ("scaleDownWindow", self.scale_down_window)):
            if not 0 <= value <= 3600:
                raise ConfigError(key, f"must be between 0 and 3600 seconds, got {value}")
        _at_least("scaleUpPercent", self.scale_up_percent, 1)
        _at_least("scaleUpPods", self.scale_up_pods, 1)
        _percent("scaleDownPercent", self.scale_down_percent)
        if not 1 <= self.policy_period <= 1800:
            raise ConfigError("scalePolicyPeriod", f"must be between 1 and 1800 seconds, got {self.policy_period}")


@dataclass(frozen=True)
class RolloutSettings:
    max_surge: int | str
    max_unavailable: int | str
    min_ready_seconds: int
    pre_stop_seconds: int
    disruption_budget: int  # PDB maxUnavailable per class

    def __post_init__(self) -> None:
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            raise ConfigError("maxUnavailable", "maxSurge and maxUnavailable cannot both be 0: the rollout could never progress")
        _at_least("minReadySeconds", self.min_ready_seconds, 0)
        _at_least("preStopSeconds", self.pre_stop_seconds, 0)
        _at_least("disruptionBudget", self.disruption_budget, 1)


@dataclass(frozen=True)
class PlacementSettings:
    # DoNotSchedule on nodes needs at least as many nodes as replicas; dev
    # clusters with one node use ScheduleAnyway.
    strict_node_spread: bool


@dataclass(frozen=True)
class RuntimeSettings:
    """The backend's tuning knobs (pools, breaker, timeouts), handed to it through a ConfigMap."""

    max_connections: int
    pool_size: int
    pool_timeout: int
    failure_threshold: int
    recovery_timeout: int

    def __post_init__(self) -> None:
        for key, value in (("maxConnections", self.max_connections), ("poolSize", self.pool_size),
                           ("poolTimeout", self.pool_timeout), ("circuitBreakerFailureThreshold", self.failure_threshold),
                           ("circuitBreakerRecoveryTimeout", self.recovery_timeout)):
            _at_least(key, value, 1)
        if self.pool_size > self.max_connections:
            raise ConfigError("poolSize",
                              f"{self.pool_size} is greater than {key_name('maxConnections')} ({self.max_connections})")


@dataclass(frozen=True)
class LocalSettings:
    """The `local` stack: a Compose-style environment for one machine, on a Docker/Podman host."""

    backends: int
    nginx_image: str
    haproxy_image: str
    prometheus_image: str
    grafana_image: str
    nginx_exporter_image: str

    def __post_init__(self) -> None:
        _at_least("localBackends", self.backends, 1)
        for key, ref in (("localNginxImage", self.nginx_image), ("localHaproxyImage", self.haproxy_image),
                         ("localPrometheusImage", self.prometheus_image), ("localGrafanaImage", self.grafana_image),
                         ("localNginxExporterImage", self.nginx_exporter_image)):
            check_image(key, ref)


def check_https_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(key, f"{url!r} must be an https:// URL (tokens and keys are never fetched in clear text)")


_HOST = re.compile(r"(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# RFC 7230 token, lower case: Envoy matches header names in lower case.
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_COOKIE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """DestinationRule connection pool and outlier detection (the mesh's circuit breaker)."""

    max_connections: int
    max_pending_requests: int
    max_requests: int
    consecutive_5xx: int
    interval: int  # seconds between ejection sweeps
    base_ejection_time: int  # seconds; grows with each ejection of the same host
    max_ejection_percent: int

    def __post_init__(self) -> None:
        for key, value in (("meshMaxConnections", self.max_connections),
                           ("meshMaxPendingRequests", self.max_pending_requests),
                           ("meshMaxRequests", self.max_requests), ("outlierConsecutive5xxErrors", self.consecutive_5xx),
                           ("outlierInterval", self.interval), ("outlierBaseEjectionTime", self.base_ejection_time)):
            _at_least(key, value, 1)
        _percent("outlierMaxEjectionPercent", self.max_ejection_percent)


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    jwks_uri: str
    audiences: tuple[str, ...]

    def __post_init__(self) -> None:
        check_https_url("jwtIssuer", self.issuer)
        check_https_url("jwtJwksUri", self.jwks_uri)
        if not self.audiences or not all(a.strip() for a in self.audiences):
            raise ConfigError("jwtAudiences",
                              "must be a non-empty list of audience strings (a token for another service must not pass)")


@dataclass(frozen=True)
class TracingSettings:
    collector_host: str
    collector_port: int
    sampling: float  # percent of requests traced

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.collector_host) or self.collector_host.startswith("*"):
            raise ConfigError("tracingCollector", f"{self.collector_host!r} is not a host name")
        if not 1 <= self.collector_port <= 65535:
            raise ConfigError("tracingCollector", f"port {self.collector_port} is not between 1 and 65535")
        if not 0 <= self.sampling <= 100:
            raise ConfigError("tracingSampling", f"must be between 0 and 100 (percent), got {self.sampling}")


@dataclass(frozen=True)
class MeshSettings:
    """The Istio mesh (docs/mesh.md): install, edge, routing, security, telemetry."""

    enabled: bool  # the namespace joins the mesh and gets its objects
    install: bool  # Helm-install Istio; false uses one already in the cluster
    cni: bool  # Istio CNI: pods need no NET_ADMIN init container
    hosts: tuple[str, ...]
    tls_secret: str
    gateway_namespace: str
    gateway_min_replicas: int
    gateway_max_replicas: int
    # Canary share, A/B rule, retries and timeouts are the traffic policy's
    # (Settings.traffic, traffic/policy.yml).
    circuit_breaker: CircuitBreakerSettings
    mtls_mode: str
    jwt: JwtSettings
    monitoring_namespace: str
    tracing: TracingSettings

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ConfigError("meshHosts", "must name at least one host the gateway serves")
        for host in self.hosts:
            if not _HOST.fullmatch(host):
                raise ConfigError("meshHosts", f"{host!r} is not a lower-case DNS name such as app.example.com or *.example.com")
        if len(set(self.hosts)) != len(self.hosts):
            raise ConfigError("meshHosts", "lists a host twice")
        if not re.fullmatch(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?", self.tls_secret):
            raise ConfigError("meshTlsSecret", f"{self.tls_secret!r} is not a valid Secret name")
        check_namespace("meshGatewayNamespace", self.gateway_namespace)
        check_namespace("monitoringNamespace", self.monitoring_namespace)
        _at_least("meshGatewayMinReplicas", self.gateway_min_replicas, 1)
        if self.gateway_min_replicas > self.gateway_max_replicas:
            raise ConfigError("meshGatewayMinReplicas", f"{self.gateway_min_replicas} is greater than "
                                                        f"{key_name('meshGatewayMaxReplicas')} ({self.gateway_max_replicas})")
        if self.mtls_mode not in MTLS_MODES:
            raise ConfigError("mtlsMode", f"must be one of {', '.join(MTLS_MODES)}, got {self.mtls_mode!r}")


_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


@dataclass(frozen=True)
class MonitoringSettings:
    enabled: bool
    install: bool
    namespace: str
    retention: str
    storage_size: str
    scrape_interval: str
    selector_labels: dict[str, str]
    # monitoring/alerts.yml with the stack's alertOverrides, checked.
    alert_thresholds: dict
    grafana_admin_secret: str
    # A Pulumi secret; None when the Secret is managed outside Pulumi.
    grafana_admin_password: pulumi.Output[str] | None

    def __post_init__(self) -> None:
        check_namespace("monitoringNamespace", self.namespace)
        for key, value in (("monitoringRetention", self.retention), ("monitoringScrapeInterval", self.scrape_interval)):
            if not _DURATION.match(value):
                raise ConfigError(key, f"{value!r} needs a unit, like 15d, 12h or 30s")
        memory_bytes("monitoringStorageSize", self.storage_size)
        if not isinstance(self.selector_labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.selector_labels.items()):
            raise ConfigError("monitoringSelectorLabels", f"must map label names to strings, got {self.selector_labels!r}")
        if not re.fullmatch(_LABEL, self.grafana_admin_secret):
            raise ConfigError("grafanaAdminSecret", f"{self.grafana_admin_secret!r} is not a valid Secret name")


@dataclass(frozen=True)
class Settings:
    platform: Platform
    cluster: ClusterSettings
    images: ImageSettings
    workloads: tuple[WorkloadSettings, ...]
    scaling: ScalingSettings
    rollout: RolloutSettings
    placement: PlacementSettings
    runtime: RuntimeSettings
    mesh: MeshSettings
    local: LocalSettings
    # The traffic policy (traffic/policy.yml) with this stack's trafficPolicy
    # overrides: routes, limits, timeouts, retries, canary, TLS, headers.
    traffic: traffic_model.Policy
    monitoring: MonitoringSettings

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ConfigError("platform", f"must be one of {', '.join(PLATFORMS)}, got {self.platform!r}")
        for workload in self.workloads:
            drain = workload.grace_period - self.rollout.pre_stop_seconds
            if drain <= 0:
                raise ConfigError(
                    workload.key("GracePeriod"),
                    f"{workload.grace_period}s leaves no time to drain after the "
                    f"{self.rollout.pre_stop_seconds}s preStop ({key_name('preStopSeconds')})",
                )
            if workload.request_timeout is not None and drain < workload.request_timeout:
                raise ConfigError(
                    workload.key("GracePeriod"),
                    f"{workload.grace_period}s minus the {self.rollout.pre_stop_seconds}s preStop is shorter than "
                    f"{key_name(workload.key('RequestTimeout'))} ({workload.request_timeout}s): "
                    "in-flight requests would be killed",
                )

    def workload(self, traffic_class: str) -> WorkloadSettings:
        return next(w for w in self.workloads if w.traffic_class == traffic_class)


# --- loading -------------------------------------------------------------------

# Classes with a request timeout key; WebSocket has none (see WorkloadSettings).
_TIMED_CLASSES = ("api", "ai")


def _workload(config: pulumi.Config, traffic_class: str) -> WorkloadSettings:
    def key(field: str) -> str:
        return f"{traffic_class}{field}"

    return WorkloadSettings(
        traffic_class=traffic_class,
        min_replicas=config.require_int(key("MinReplicas")),
        max_replicas=config.require_int(key("MaxReplicas")),
        cpu_request=config.require(key("CpuRequest")),
        cpu_limit=config.require(key("CpuLimit")),
        memory_request=config.require(key("MemoryRequest")),
        memory_limit=config.require(key("MemoryLimit")),
        grace_period=config.require_int(key("GracePeriod")),
        request_timeout=config.require_int(key("RequestTimeout")) if traffic_class in _TIMED_CLASSES else None,
    )


def load(config: pulumi.Config | None = None) -> Settings:
    """Read and validate the whole stack config; raises ConfigError on the first bad value."""
    config = config or pulumi.Config()
    return Settings(
        platform=config.require("platform"),
        cluster=ClusterSettings(
            namespace=config.require("namespace"),
            service_type=config.require("serviceType"),
        ),
        images=ImageSettings(
            stable=config.require("image"),
            canary=config.get("canaryImage") or None,
            canary_replicas=config.require_int("canaryReplicas"),
        ),
        workloads=tuple(_workload(config, c) for c in naming.TRAFFIC_CLASSES),
        scaling=ScalingSettings(
            enabled=config.require_bool("autoscaling"),
            replicas=config.require_int("replicas"),
            cpu_target=config.require_int("cpuTarget"),
            memory_target=config.require_int("memoryTarget"),
            scale_up_window=config.require_int("scaleUpWindow"),
            scale_down_window=config.require_int("scaleDownWindow"),
            scale_up_percent=config.require_int("scaleUpPercent"),
            scale_up_pods=config.require_int("scaleUpPods"),
            scale_down_percent=config.require_int("scaleDownPercent"),
            policy_period=config.require_int("scalePolicyPeriod"),
        ),
        rollout=RolloutSettings(
            max_surge=int_or_percent("maxSurge", config.require("maxSurge")),
            max_unavailable=int_or_percent("maxUnavailable", config.require("maxUnavailable")),
            min_ready_seconds=config.require_int("minReadySeconds"),
            pre_stop_seconds=config.require_int("preStopSeconds"),
            disruption_budget=config.require_int("disruptionBudget"),
        ),
        placement=PlacementSettings(strict_node_spread=config.require_bool("strictNodeSpread")),
        runtime=RuntimeSettings(
            max_connections=config.require_int("maxConnections"),
            pool_size=config.require_int("poolSize"),
            pool_timeout=config.require_int("poolTimeout"),
            failure_threshold=config.require_int("circuitBreakerFailureThreshold"),
            recovery_timeout=config.require_int("circuitBreakerRecoveryTimeout"),
        ),
        mesh=_mesh(config),
        local=LocalSettings(
            backends=config.require_int("localBackends"),
            nginx_image=config.require("localNginxImage"),
            haproxy_image=config.require("localHaproxyImage"),
            prometheus_image=config.require("localPrometheusImage"),
            grafana_image=config.require("localGrafanaImage"),
            nginx_exporter_image=config.require("localNginxExporterImage"),
        ),
        traffic=traffic_policy(config),
        monitoring=_monitoring(config),
    )


def _monitoring(config: pulumi.Config) -> MonitoringSettings:
    overrides = config.get_object("alertOverrides") or {}
    try:
        thresholds = alert_rules.load(overrides, source=key_name("alertOverrides"))
    except alert_rules.ThresholdError as exc:
        raise ConfigError("alertOverrides", str(exc).removeprefix(f"{key_name('alertOverrides')}: ")) from None
    # Read raw only to learn whether it is set; the value itself stays a secret.
    password_set = bool(pulumi.runtime.get_config(key_name("grafanaAdminPassword")))
    return MonitoringSettings(
        enabled=config.require_bool("monitoring"),
        install=config.require_bool("monitoringInstall"),
        namespace=config.require("monitoringNamespace"),
        retention=config.require("monitoringRetention"),
        storage_size=config.require("monitoringStorageSize"),
        scrape_interval=config.require("monitoringScrapeInterval"),
        selector_labels=config.require_object("monitoringSelectorLabels"),
        alert_thresholds=thresholds,
        grafana_admin_secret=config.require("grafanaAdminSecret"),
        grafana_admin_password=config.require_secret("grafanaAdminPassword") if password_set else None,
    )


def traffic_policy(config: pulumi.Config) -> traffic_model.Policy:
    """traffic/policy.yml with the stack's `trafficPolicy` overrides, validated;
    a bad value names the key and the policy field."""
    overrides = config.get_object("trafficPolicy") or {}
    try:
        return traffic_model.load(overrides=overrides)
    except traffic_model.PolicyError as exc:
        raise ConfigError("trafficPolicy", str(exc)) from None


def _float(config: pulumi.Config, key: str) -> float:
    # Pulumi project config has no number type; fractional values arrive as strings.
    raw = config.require(key)
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(key, f"{raw!r} is not a number") from None


def _string_list(config: pulumi.Config, key: str) -> tuple[str, ...]:
    value = config.require_object(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"must be a list of strings, got {value!r}")
    return tuple(value)


def _collector(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("tracingCollector",
                          f"{raw!r} must be HOST:PORT, e.g. jaeger-collector.observability.svc.cluster.local:4317")
    return host, int(port)


def _mesh(config: pulumi.Config) -> MeshSettings:
    collector_host, collector_port = _collector(config.require("tracingCollector"))
    return MeshSettings(
        enabled=config.require_bool("mesh"),
        install=config.require_bool("meshInstall"),
        cni=config.require_bool("meshCni"),
        hosts=_string_list(config, "meshHosts"),
        tls_secret=config.require("meshTlsSecret"),
        gateway_namespace=config.require("meshGatewayNamespace"),
        gateway_min_replicas=config.require_int("meshGatewayMinReplicas"),
        gateway_max_replicas=config.require_int("meshGatewayMaxReplicas"),
        circuit_breaker=CircuitBreakerSettings(
            max_connections=config.require_int("meshMaxConnections"),
            max_pending_requests=config.require_int("meshMaxPendingRequests"),
            max_requests=config.require_int("meshMaxRequests"),
            consecutive_5xx=config.require_int("outlierConsecutive5xxErrors"),
            interval=config.require_int("outlierInterval"),
            base_ejection_time=config.require_int("outlierBaseEjectionTime"),
            max_ejection_percent=config.require_int("outlierMaxEjectionPercent"),
        ),
        mtls_mode=config.require("mtlsMode"),
        jwt=JwtSettings(
            issuer=config.require("jwtIssuer"),
            jwks_uri=config.require("jwtJwksUri"),
            audiences=_string_list(config, "jwtAudiences"),
        ),
        monitoring_namespace=config.require("monitoringNamespace"),
        tracing=TracingSettings(collector_host, collector_port, _float(config, "tracingSampling")),
    )
