"""Bring the lab up and down, and describe it in .lab/lab.json."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from automata_lb.targets import LAB_INVENTORY
from automata_lb.wait import until

from . import images, monitoring, topology
from .podman import exists, inspect, podman

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".lab"
LAB_JSON = STATE / "lab.json"
# What a new lab starts from (tracked) and the running lab's own inventory,
# which the operations CLI edits as it scales and moves the canary: the
# lab's state lives with the lab and goes with `make down`, never in a
# tracked file.
SEED_INVENTORY = ROOT / "inventories" / "lab"
INVENTORY_DIR = LAB_INVENTORY
INVENTORY = INVENTORY_DIR / "hosts.yml"
# The same nodes through a production-shaped inventory (docs/lab.md): a
# non-root user with sudo, secrets in Ansible Vault, the monitoring URL set.
REHEARSAL_DIR = STATE / "rehearsal"
REHEARSAL_VAULT_PASS = STATE / "rehearsal.vault-pass"
REHEARSAL_USER = "deploy"
SSH_KEY = STATE / "ssh" / "id_ed25519"
PKI = STATE / "pki"
SECRETS = STATE / "secrets"
PROMETHEUS_DIR = STATE / "prometheus"
RELEASES = STATE / "releases.json"
STATS_USER = "admin"
CERT_LIFETIME = datetime.timedelta(days=365)
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
    names = ["localhost", "127.0.0.1", "::1", "edge.automata.test", topology.EDGE_VIP,
             *(e.name for e in topology.EDGES), *(e.address for e in topology.EDGES)]
    if not _certificate_current(PKI / "server.pem", names):
        ca = trustme.CA(organization_name="Automata lab (throwaway)")
        ca.cert_pem.write_to_path(str(PKI / "ca.pem"))
        key, leaf = _issue_leaf(ca, names)
        (PKI / "server.key").write_bytes(key)
        # The leaf alone: the CA signs it directly, and clients hold the CA (ca.pem).
        (PKI / "server.pem").write_bytes(leaf)
        (PKI / "server.key").chmod(0o600)
    SECRETS.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, length in (("haproxy_stats_password", 18), ("vrrp_auth_pass", 6)):
        # token_urlsafe(6) is 8 characters: VRRPv2's PASS holds exactly 8.
        path = SECRETS / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(length))
            path.chmod(0o600)
    snapshot = STATE / "host-sysctls.json"
    if not snapshot.exists():
        snapshot.write_text(json.dumps(read_host_sysctls(), indent=2))


def _issue_leaf(ca: trustme.CA, names: list[str]) -> tuple[bytes, bytes]:
    """The edge certificate, signed by the lab's CA: (key PEM, certificate PEM).

    Not trustme's own leaf: it lives a thousand years and marks its
    subjectAltName critical next to a non-empty subject, and path validators
    as strict as a TLS scanner's (RFC 5280) refuse both.  This one is what a
    public CA issues: a year, ECDSA P-256, SHA-256, serverAuth."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew
    alt_names = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.automata.test")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + CERT_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _certificate_current(path: Path, names: list[str]) -> bool:
    """The lab's edge certificate exists, names every lab address and has
    more than a month left; otherwise `up` issues a new one."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    if san_ext.critical:
        return False  # trustme's own leaf, from before (see _issue_leaf)
    san = san_ext.value
    held = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    held |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return set(names) <= held and remaining > datetime.timedelta(days=30) and lifetime <= CERT_LIFETIME


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
    # keepalived needs NET_ADMIN to add the floating address and NET_RAW for
    # VRRP and gratuitous ARP; both act on the node's own network namespace.
    _ensure_container(topology.container_name(edge.name), (
        "--hostname", edge.name, "--network", topology.NETWORK, "--ip", edge.address,
        "--mac-address", topology.mac_address(edge.address),
        "--systemd=always", "--cap-add", "SYS_ADMIN,NET_ADMIN,NET_RAW", *ports,
        "-v", f"{SSH_KEY}.pub:/root/.ssh/authorized_keys:ro",
        "-v", f"{SSH_KEY}.pub:/home/{REHEARSAL_USER}/.ssh/authorized_keys:ro",
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


def start_instance(name: str, address: str, track: str, release: str | None) -> None:
    """Start one backend instance running `release` (None: its track's) and
    return once it answers /health; Prometheus scrapes it from then on."""
    set_release(name, None if release in (None, track) else release)
    known = {b.name: b for b in topology.BACKENDS}
    backend = known.get(name) or topology.Backend(name, address, 0, version=track)
    # Instances the lab starts at `up` publish their ports on loopback; those
    # scaling adds are reached on the lab network only.
    ensure_backend(backend, images.ensure_backend(), publish=backend.index > 0)
    until(lambda: _answers_health(address), 60, f"{name} answering /health", interval=0.3, error=RuntimeError)
    monitoring.set_backend_target(PROMETHEUS_DIR, name, address, track)


def stop_instance(name: str) -> None:
    """Stop one backend instance (SIGTERM: it finishes what it serves) and
    stop scraping it."""
    remove_backend(name)
    set_release(name, None)
    monitoring.set_backend_target(PROMETHEUS_DIR, name, None)


def _answers_health(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{topology.BACKEND_APP_PORT}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _ensure_prometheus(image: str) -> None:
    changed = monitoring.write_config(PROMETHEUS_DIR)
    name = topology.container_name(topology.PROMETHEUS_NAME)
    was_running = exists("container", name) and inspect(name)["State"]["Running"]
    _ensure_container(name, monitoring.run_args(image, PROMETHEUS_DIR))
    until(monitoring.ready, 60, f"Prometheus ready on {monitoring.url()}", interval=0.2, error=RuntimeError)
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
        # Reached straight over the Podman bridge, from this machine only.
        "vip": {"address": topology.EDGE_VIP,
                "endpoints": {k: f"{scheme}://{topology.EDGE_VIP}:{inner}"
                              for k, (_, inner) in topology.EDGE_PORTS.items()
                              for scheme in ["https" if k.endswith("https") else "http"]}},
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
            "vrrp_auth_pass_file": str(SECRETS / "vrrp_auth_pass"),
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


def _ensure_inventory() -> None:
    """The running lab's inventory: a copy of inventories/lab, made once per
    lab, so what the CLI changed survives `make lab` run again."""
    if INVENTORY.exists():
        return
    shutil.copytree(SEED_INVENTORY, INVENTORY_DIR, dirs_exist_ok=True)
    _log(f"inventory: {INVENTORY_DIR} (from {SEED_INVENTORY.relative_to(ROOT)})")


def _ensure_rehearsal() -> None:
    """The rehearsal inventory: what inventories/prod asks of an operator,
    filled in for the lab's nodes.  It connects as `deploy` (the node image's
    automation user, passwordless sudo) with become, keeps the stats and
    VRRP passwords in group_vars/edge/vault.yml encrypted with Ansible Vault
    (the password file is .lab/rehearsal.vault-pass), and names the lab's
    Prometheus for the CLI.  The TLS material stays in .lab/pki, outside the
    inventory folder."""
    if (REHEARSAL_DIR / "hosts.yml").exists():
        return
    if not REHEARSAL_VAULT_PASS.exists():
        REHEARSAL_VAULT_PASS.write_text(secrets.token_urlsafe(24) + "\n")
        REHEARSAL_VAULT_PASS.chmod(0o600)
    (REHEARSAL_DIR / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (REHEARSAL_DIR / "group_vars" / "edge").mkdir(parents=True, exist_ok=True)
    shutil.copy(SEED_INVENTORY / "hosts.yml", REHEARSAL_DIR / "hosts.yml")
    all_vars = (SEED_INVENTORY / "group_vars" / "all" / "main.yml").read_text()
    all_vars, n = re.subn(r"^ansible_user: root$", f"ansible_user: {REHEARSAL_USER}\nansible_become: true", all_vars,
                          flags=re.M)
    edge_vars = (SEED_INVENTORY / "group_vars" / "edge" / "main.yml").read_text()
    secrets_of = {"haproxy_lb_stats_password": "haproxy_stats_password", "edge_vip_auth_pass": "vrrp_auth_pass"}
    for variable in secrets_of:
        edge_vars, found = re.subn(rf"^{variable}:.*$", f'{variable}: "{{{{ vault_{variable} }}}}"', edge_vars,
                                   flags=re.M)
        n += found
    if n != 3:
        raise RuntimeError(f"{SEED_INVENTORY} no longer has the lines the rehearsal inventory replaces")
    edge_vars += f"\n# The lab's Prometheus, for automata-lb's metrics and canary analysis.\n" \
                 f"monitoring_prometheus_url: {monitoring.url()}\n"
    edge_vars += "\n# How automata-lb starts and stops a backend instance (scale-up/down, rolling-update,\n" \
                 "# canary-deploy), and the instances scale-up may start: the lab's instances are\n" \
                 "# containers on the machine that runs the lab.\n" \
                 f"automata_lb_instance_playbook: {os.path.relpath(ROOT / 'lab' / 'instance.yml', REHEARSAL_DIR)}\n" \
                 "automata_lb_instance_spares:\n" + "".join(
                     f"  - {{name: {s['name']}, address: {s['address']}, port: {s['port']}}}\n"
                     for s in map(topology.stable_slot, range(1, topology.STABLE_SLOTS + 1))
                     if s["name"] not in {b.name for b in topology.BACKENDS})
    (REHEARSAL_DIR / "group_vars" / "all" / "main.yml").write_text(all_vars)
    (REHEARSAL_DIR / "group_vars" / "edge" / "main.yml").write_text(edge_vars)
    vault = REHEARSAL_DIR / "group_vars" / "edge" / "vault.yml"
    vault.write_text("".join(f"vault_{variable}: {json.dumps((SECRETS / name).read_text().strip())}\n"
                             for variable, name in secrets_of.items()))
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(REHEARSAL_VAULT_PASS), str(vault)], check=True, capture_output=True, text=True)
    _log(f"rehearsal inventory: {REHEARSAL_DIR} (user {REHEARSAL_USER}, become, vault)")


def up() -> dict:
    started = time.monotonic()
    _ensure_inventory()
    _ensure_secrets()
    _ensure_rehearsal()
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
