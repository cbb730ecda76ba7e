"""Bring the lab up and down, and describe it in .lab/lab.json."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import trustme

from . import images, monitoring, topology
from .podman import exists, inspect, podman

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".lab"
LAB_JSON = STATE / "lab.json"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
SSH_KEY = STATE / "ssh" / "id_ed25519"
PKI = STATE / "pki"
SECRETS = STATE / "secrets"
PROMETHEUS_DIR = STATE / "prometheus"
RELEASES = STATE / "releases.json"
STATS_USER = "admin"
LABEL = f"{topology.PREFIX}=1"
SPEC_LABEL = f"{topology.PREFIX}.spec"

# Host-global keys a container with a writable /proc/sys could change (the
# lab's nodes have none, see _ensure_edge).  `up` records them once, and
# tests/lab/test_kernel_tuning.py proves a lab run leaves them as they were.
HOST_GLOBAL_SYSCTLS = (
    "fs.file-max", "fs.nr_open", "fs.inotify.max_user_watches", "fs.protected_regular",
    "kernel.pid_max", "kernel.sysrq", "kernel.core_uses_pid", "vm.swappiness",
    "vm.max_map_count", "vm.overcommit_memory",
)


def _log(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def read_host_sysctls() -> dict[str, str]:
    values = {}
    for key in HOST_GLOBAL_SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        if path.exists():
            values[key] = " ".join(path.read_text().split())
    return values


def _ensure_secrets() -> None:
    """Throwaway credentials: an SSH key, a CA with the edge certificate, a stats password."""
    SSH_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not SSH_KEY.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "automata-lab",
                        "-f", str(SSH_KEY)], check=True)
    PKI.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (PKI / "server.pem").exists():
        ca = trustme.CA(organization_name="Automata lab (throwaway)")
        names = ["localhost", "127.0.0.1", "::1", "edge.automata.test",
                 *(e.name for e in topology.EDGES), *(e.address for e in topology.EDGES)]
        cert = ca.issue_cert(*names)
        ca.cert_pem.write_to_path(str(PKI / "ca.pem"))
        cert.private_key_pem.write_to_path(str(PKI / "server.key"))
        # Leaf first, then the chain, as NGINX and HAProxy expect.
        with open(PKI / "server.pem", "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        (PKI / "server.key").chmod(0o600)
    SECRETS.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = SECRETS / "haproxy_stats_password"
    if not password.exists():
        password.write_text(secrets.token_urlsafe(18))
        password.chmod(0o600)
    snapshot = STATE / "host-sysctls.json"
    if not snapshot.exists():
        snapshot.write_text(json.dumps(read_host_sysctls(), indent=2))


def _ensure_network() -> None:
    if not exists("network", topology.NETWORK):
        podman("network", "create", "--label", LABEL, "--subnet", topology.SUBNET,
               "--gateway", topology.GATEWAY, topology.NETWORK)


def _spec_label(args: tuple[str, ...]) -> str:
    return f"{SPEC_LABEL}={hashlib.sha256(' '.join(args).encode()).hexdigest()[:12]}"


def _ensure_container(name: str, args: tuple[str, ...]) -> None:
    """Run `podman run -d --name NAME ARGS` unless an identical container exists.

    The run arguments (image, ports, addresses) are hashed into a label, so a
    change in topology.py or a rebuilt image replaces the container, and an
    unchanged one is only started if it was stopped.
    """
    label = _spec_label(args)
    if exists("container", name):
        info = inspect(name)
        if info["Config"]["Labels"].get(SPEC_LABEL) == label.split("=", 1)[1]:
            if not info["State"]["Running"]:
                podman("start", name)
            return
        podman("rm", "-f", "-t", "5", name)
    podman("run", "-d", "--name", name, "--label", LABEL, "--label", label, *args)


def _ensure_edge(edge: topology.Edge, image: str) -> None:
    ports = [f"-p=127.0.0.1:{outer}:{inner}" for outer, inner in edge.ports.values()]
    # Not --privileged: that makes /proc/sys writable, and systemd as PID 1
    # then raises the host's fs.file-max at boot. CAP_SYS_ADMIN is enough for
    # the mount namespacing of HAProxy's unit; /proc/sys/net is made writable
    # inside the node (images/node/files/lab-proc-sys-net.service).
    _ensure_container(topology.container_name(edge.name), (
        "--hostname", edge.name, "--network", topology.NETWORK, "--ip", edge.address,
        "--mac-address", topology.mac_address(edge.address),
        "--systemd=always", "--cap-add", "SYS_ADMIN", *ports,
        "-v", f"{SSH_KEY}.pub:/root/.ssh/authorized_keys:ro",
        image, "/sbin/init"))


def releases() -> dict[str, str]:
    """What each backend runs, when an operator changed it (automata-lb
    rolling-update / canary-deploy); otherwise its track name."""
    return json.loads(RELEASES.read_text()) if RELEASES.exists() else {}


def set_release(name: str, release: str | None) -> None:
    current = releases()
    if release is None:
        current.pop(name, None)
    else:
        current[name] = release
    RELEASES.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def ensure_backend(backend: topology.Backend, image: str, *, publish: bool = True) -> None:
    """Run one backend container (idempotent); `publish` maps its app and
    fault-injection ports on loopback (instances added by scaling have none)."""
    # The stop timeout exceeds the backend's grace period so SIGTERM drains
    # in-flight requests and WebSockets before podman falls back to SIGKILL.
    ports = (f"-p=127.0.0.1:{backend.app_port}:{topology.BACKEND_APP_PORT}",
             f"-p=127.0.0.1:{backend.admin_port}:{topology.BACKEND_ADMIN_PORT}") if publish else ()
    _ensure_container(topology.container_name(backend.name), (
        "--hostname", backend.name, "--network", topology.NETWORK, "--ip", backend.address,
        "--mac-address", topology.mac_address(backend.address),
        "--stop-timeout", "40", *ports,
        "-e", f"AUTOMATA_AI_POOL={topology.ai_pool()}",
        image, "--instance", backend.name, "--version", releases().get(backend.name, backend.version),
        "--host", "0.0.0.0", "--port", str(topology.BACKEND_APP_PORT),
        "--admin-host", "0.0.0.0", "--admin-port", str(topology.BACKEND_ADMIN_PORT),
        "--grace-period", "30"))


def remove_backend(name: str) -> None:
    """Stop (SIGTERM: the backend drains) and remove one backend container."""
    container = topology.container_name(name)
    if exists("container", container):
        podman("stop", "-t", "40", container)
        podman("rm", "-f", container)


def _ensure_prometheus(image: str) -> None:
    changed = monitoring.write_config(PROMETHEUS_DIR)
    name = topology.container_name(topology.PROMETHEUS_NAME)
    was_running = exists("container", name) and inspect(name)["State"]["Running"]
    _ensure_container(name, monitoring.run_args(image, PROMETHEUS_DIR))
    deadline = time.monotonic() + 60
    while not monitoring.ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus did not become ready on {monitoring.url()} within 60s")
        time.sleep(0.2)
    if changed and was_running:
        monitoring.reload()


def _wait_for(address: str, port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer on {address}:{port} within {timeout:.0f}s")


def describe() -> dict:
    def edge_entry(e: topology.Edge) -> dict:
        scheme = {"nginx_https": "https", "haproxy_https": "https"}
        return {
            "name": e.name, "container": topology.container_name(e.name), "address": e.address,
            "ssh": {"user": "root", "port": 22, "key": str(SSH_KEY)},
            "endpoints": {k: f"{scheme.get(k, 'http')}://127.0.0.1:{outer}"
                          for k, (outer, _) in e.ports.items()},
        }

    return {
        "root": str(ROOT),
        "network": {"name": topology.NETWORK, "subnet": topology.SUBNET, "gateway": topology.GATEWAY},
        "inventory": str(INVENTORY),
        "edges": [edge_entry(e) for e in topology.EDGES],
        "backends": [{
            "name": b.name, "container": topology.container_name(b.name), "address": b.address,
            "port": topology.BACKEND_APP_PORT, "version": b.version,
            "endpoints": {"app": f"http://127.0.0.1:{b.app_port}",
                          "admin": f"http://127.0.0.1:{b.admin_port}"},
        } for b in topology.BACKENDS],
        "credentials": {
            "ssh_key": str(SSH_KEY),
            "ca_cert": str(PKI / "ca.pem"),
            "server_cert": str(PKI / "server.pem"),
            "server_key": str(PKI / "server.key"),
            "haproxy_stats_user": STATS_USER,
            "haproxy_stats_password_file": str(SECRETS / "haproxy_stats_password"),
        },
        "host_sysctls_before": str(STATE / "host-sysctls.json"),
        "prometheus": {
            "container": topology.container_name(topology.PROMETHEUS_NAME),
            "address": topology.PROMETHEUS_ADDRESS,
            "url": monitoring.url(),
            "scrape_interval_seconds": topology.SCRAPE_INTERVAL_SECONDS,
            "config_dir": str(PROMETHEUS_DIR),
        },
    }


def up() -> dict:
    started = time.monotonic()
    _ensure_secrets()
    images.ensure_base()
    node_image = images.ensure_node()
    backend_image = images.ensure_backend()
    prometheus_image = images.ensure_prometheus()
    _ensure_network()
    for edge in topology.EDGES:
        _ensure_edge(edge, node_image)
    for backend in topology.BACKENDS:
        ensure_backend(backend, backend_image)
    for edge in topology.EDGES:
        _wait_for(edge.address, 22, f"sshd on {edge.name}")
    for backend in topology.BACKENDS:
        _wait_for("127.0.0.1", backend.app_port, backend.name)
    _ensure_prometheus(prometheus_image)
    description = describe()
    LAB_JSON.write_text(json.dumps(description, indent=2) + "\n")
    _log(f"up in {time.monotonic() - started:.1f}s; description in {LAB_JSON}")
    return description


def down(remove_images: bool = False) -> None:
    """Remove what the lab created (by label) and nothing else."""
    ids = podman("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        podman("rm", "-f", "-t", "5", *ids)
    if exists("network", topology.NETWORK):
        podman("network", "rm", topology.NETWORK)
    if remove_images:
        images.remove_all()
    shutil.rmtree(STATE, ignore_errors=True)
    _log("down: containers, network and .lab/ removed" + (" with images" if remove_images else ""))


def status() -> list[tuple[str, str]]:
    out = podman("ps", "-a", "--filter", f"label={LABEL}",
                 "--format", "{{.Names}}\t{{.Status}}").stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]
