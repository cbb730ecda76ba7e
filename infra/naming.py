"""Names, labels and ports shared by every component (and by the mesh).

Pure functions only: the service mesh, the policy pack and the tests call
them to find the objects this program creates, so a rename happens here once.
"""

from __future__ import annotations

from typing import Literal

APP = "automata-backend"
PART_OF = "automata"
MANAGED_BY = "pulumi"

# The backend's traffic classes, each its own Deployment, Service, HPA and PDB.
TRAFFIC_CLASSES: tuple[str, ...] = ("api", "websocket", "ai")

Track = Literal["stable", "canary"]
TRACKS: tuple[Track, ...] = ("stable", "canary")

# The backend listens on one port for /api, /ws, /ai, /health* and /metrics.
CONTAINER_PORT = 8000
# The Service port is 80 and named "http" so Istio picks HTTP routing for it
# without guessing the protocol.
SERVICE_PORT = 80
PORT_NAME = "http"

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/health"
METRICS_PATH = "/metrics"

RUNTIME_CONFIG_NAME = "automata-runtime"
SIDECAR_INJECTION_LABEL = "istio-injection"


def workload_name(traffic_class: str) -> str:
    """Name of the ServiceAccount, Service, PDB and HPA of a traffic class."""
    _check_class(traffic_class)
    return f"automata-{traffic_class}"


def service_name(traffic_class: str) -> str:
    return workload_name(traffic_class)


def deployment_name(traffic_class: str, track: Track) -> str:
    # The stable Deployment keeps the plain name so dashboards and
    # `kubectl rollout` commands do not change when a canary comes and goes.
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    base = workload_name(traffic_class)
    return base if track == "stable" else f"{base}-canary"


def service_host(traffic_class: str, namespace: str) -> str:
    """In-cluster DNS name, as the mesh's VirtualService hosts refer to it."""
    return f"{service_name(traffic_class)}.{namespace}.svc.cluster.local"


def selector_labels(traffic_class: str) -> dict[str, str]:
    """Labels that select every pod of a class, both tracks (Service, PDB)."""
    _check_class(traffic_class)
    return {"app": APP, "component": traffic_class}


def track_selector_labels(traffic_class: str, track: Track) -> dict[str, str]:
    """Labels that select one track: the Deployment selector, the mesh subset."""
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    return {**selector_labels(traffic_class), "version": track}


def labels(traffic_class: str, track: Track | None = None) -> dict[str, str]:
    """Every label an object of a class carries (recommended k8s labels too)."""
    base = track_selector_labels(traffic_class, track) if track else selector_labels(traffic_class)
    return {
        **base,
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": traffic_class,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _check_class(traffic_class: str) -> None:
    if traffic_class not in TRAFFIC_CLASSES:
        raise ValueError(f"traffic class must be one of {TRAFFIC_CLASSES}, got {traffic_class!r}")


def backend_args(instance: str, track: Track, grace_period: int) -> list[str]:
    """Arguments for the reference backend image (ENTRYPOINT python3 -m
    automata_backend): listen on every interface of the pod/container, name
    itself in X-Backend-Instance/Version, drain for `grace_period` after SIGTERM."""
    return [
        "--instance", instance,
        "--version", track,
        "--host", "0.0.0.0",
        "--port", str(CONTAINER_PORT),
        "--grace-period", str(grace_period),
    ]


# --- the mesh (infra/mesh.py) -------------------------------------------------

GATEWAY_NAME = "automata-gateway"
VIRTUAL_SERVICE_NAME = "automata-edge"
# The gateway chart labels its pods `istio: <release name without istio->`.
GATEWAY_RELEASE = "istio-ingressgateway"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
TRUST_DOMAIN = "cluster.local"


def subset_name(track: Track, variant: str = "") -> str:
    """DestinationRule subset of a track; a variant (e.g. "auth") is the same
    pods under another load-balancing policy."""
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    return f"{variant}-{track}" if variant else track


def service_account_principal(namespace: str, service_account: str) -> str:
    """The SPIFFE identity (without spiffe://) Istio's mTLS gives a workload."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"
