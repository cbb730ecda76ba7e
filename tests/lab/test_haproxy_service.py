"""The HAProxy service on both edge nodes: master-worker, descriptors,
the local-only runtime API, and logs that say where each request went."""

from __future__ import annotations

import uuid

import httpx

from haproxy_lab import ADMIN_SOCKET, runtime
from labkit import EDGE_HOSTS

testinfra_hosts = [EDGE_HOSTS]


def _info(host) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in runtime(host, "show info").splitlines() if ": " in line)


def test_haproxy_runs_in_master_worker_mode(host):
    service = host.service("haproxy")
    assert service.is_running and service.is_enabled
    master = host.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    assert "-Ws" in host.file(f"/proc/{master}/cmdline").content_string.replace("\0", " ")
    # Listeners: the public frontend on every address, the stats/metrics
    # frontend on the node's own address only.
    assert host.socket("tcp://0.0.0.0:8000").is_listening
    address = host.ansible.get_variables()["ansible_host"]
    assert host.socket(f"tcp://{address}:8404").is_listening
    assert not host.socket("tcp://0.0.0.0:8404").is_listening


def test_maxconn_fits_the_descriptor_limit(host):
    info = _info(host)
    worker = host.run("pgrep -P $(systemctl show -p MainPID --value haproxy) haproxy | tail -1").stdout.strip()
    limits = host.file(f"/proc/{worker}/limits").content_string
    soft = int(next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3])
    # HAProxy sizes its descriptor needs from maxconn (Maxsock); that must
    # fit the limit kernel_tuning gave the service, or accept() fails under load.
    assert int(info["Maxsock"]) <= soft, (info["Maxsock"], soft)
    assert int(info["Maxconn"]) * 2 <= soft
    print(f"{host.backend.hostname}: Maxconn {info['Maxconn']}, Maxsock {info['Maxsock']}, nofile {soft}")


def test_runtime_api_is_local_and_root_only(host):
    sock = host.file(ADMIN_SOCKET)
    assert sock.is_socket and sock.user == "root"
    assert sock.mode & 0o007 == 0, oct(sock.mode)  # nobody outside root/haproxy
    assert "Name: HAProxy" in runtime(host, "show info")


def test_log_line_names_frontend_backend_server_and_timings(host, lab):
    edge = next(e for e in lab["edges"] if e["name"] == host.backend.hostname)
    marker = uuid.uuid4().hex
    routes = {"/api/": "api", "/auth/": "auth", "/ai/": "ai"}
    for prefix in routes:
        httpx.get(f"{edge['endpoints']['haproxy_http']}{prefix}{marker}", params={"seconds": 0}, timeout=5)
    logs = host.run(f"journalctl -u haproxy --no-pager --since -2min -g {marker}").stdout
    for prefix, backend in routes.items():
        line = next((entry for entry in logs.splitlines() if f"{prefix}{marker}" in entry), None)
        assert line, logs
        # "public api/backend-2 0/0/1/3/4 200 ... ---- ..." : frontend,
        # backend/server, Treq/Twait/Tconnect/Tresp/Ttotal, status, termination state.
        fields = line.split()
        at = fields.index("public")
        # (the canary dice may send it to the class's canary backend)
        chosen = fields[at + 1].split("/")[0]
        assert chosen in (backend, f"{backend}_canary"), line
        assert len(fields[at + 2].split("/")) == 5, line
        assert fields[at + 3] == "200" and "----" in fields, line
