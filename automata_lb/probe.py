"""Runs ON an edge node (python3 -, over SSH) and prints one JSON document:
NGINX and HAProxy state, versions, config hashes, last reload, every
HAProxy server with its state, weight and sessions, the canary share, and
keepalived's VRRP state with the floating addresses the node holds.

Standard library only: the node has the python3 Ansible uses and nothing else.
Kept small and read-only; every change goes through edge.py's commands.
edge.py puts `ARGS = {...}` in front of it: where this node keeps the
NGINX tree, the HAProxy configuration and the runtime API socket.
"""

import csv
import glob
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time

ARGS = globals().get("ARGS", {})
NGINX_DIR, HAPROXY_DIR, ADMIN_SOCKET = ARGS.get("nginx_conf_dir"), ARGS.get("haproxy_config_dir"), ARGS.get("haproxy_socket")


def run(*argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (proc.stdout + proc.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"


def runtime(command):
    """One HAProxy runtime API command; "" when the socket is not there."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(ADMIN_SOCKET)
            s.sendall((command + "\n").encode())
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError:
        return ""


def digest(patterns):
    h = hashlib.sha256()
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        if os.path.isfile(path):
            h.update(path.encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def started(pid):
    """Start time (Unix seconds) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def service(name):
    out = run("systemctl", "show", name, "-p", "ActiveState", "-p", "MainPID")
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    pid = int(props.get("MainPID", "0") or 0)
    workers = children(pid) if pid else []
    # A reload replaces the workers and keeps the master: the newest worker
    # started at the last reload (or at the start).
    last = max((started(w) for w in workers), default=started(pid) if pid else None)
    return {"active": props.get("ActiveState") == "active", "pid": pid, "last_reload": last}


def nginx():
    state = service("nginx")
    state["version"] = run("nginx", "-v").rpartition("/")[2]
    state["config_hash"] = digest([f"{NGINX_DIR}/nginx.conf", f"{NGINX_DIR}/proxy_params", f"{NGINX_DIR}/conf.d/*"])
    # The canary share of conf.d/canary.conf (traffic/nginx.py canary_file).
    try:
        with open(f"{NGINX_DIR}/conf.d/canary.conf") as f:
            text = f.read()
        share = re.search(r"^\s*(\d+)%\s", text, re.M)
        state["canary_share"] = int(share.group(1)) if share else (0 if "split_clients" in text else None)
    except OSError:
        state["canary_share"] = None
    return state


def haproxy():
    state = service("haproxy")
    state["version"] = run("haproxy", "-v").splitlines()[0].split()[2] if state["active"] else ""
    state["config_hash"] = digest([f"{HAPROXY_DIR}/haproxy.cfg", f"{HAPROXY_DIR}/maps/*"])
    rows = csv.DictReader(io.StringIO(runtime("show stat").lstrip("# ")))
    servers = []
    for r in rows:
        if r.get("svname") in ("FRONTEND", "BACKEND", None) or r.get("type") != "2":
            continue
        servers.append({
            "backend": r["pxname"], "server": r["svname"], "status": r["status"],
            "check": r["check_status"].lstrip("* "), "weight": int(r["weight"] or 0),
            "sessions": int(r["scur"] or 0), "address": r.get("addr", ""), "backup": r.get("bck") == "1",
        })
    state["servers"] = servers
    share = runtime("get var " + ARGS["haproxy_share_var"]).strip()
    # "proc.canary_share: type=sint value=<10>"
    state["canary_share"] = int(share.rsplit("<", 1)[1].rstrip(">")) if "value=<" in share else None
    return state


def keepalived(config="/etc/keepalived/keepalived.conf", state_file="/run/keepalived/state"):
    """keepalived's VRRP state (from the role's notify script) and which of
    the floating addresses this node holds now."""
    state = service("keepalived")
    try:
        with open(config) as f:
            text = f.read()
    except OSError:
        text = ""
    blocks = re.findall(r"virtual_ipaddress\s*\{([^}]*)\}", text)
    addresses = [line.split()[0].split("/")[0] for block in blocks for line in block.splitlines() if line.split()]
    try:
        with open(state_file) as f:
            published = dict(line.strip().split("=", 1) for line in f if "=" in line)
    except OSError:
        published = {}
    held = set(re.findall(r"inet (\S+)/", run("ip", "-o", "-4", "addr", "show")))
    return {"active": state["active"], "state": published.get("state"),
            "since": float(published["since"]) if published.get("since") else None,
            "addresses": addresses, "holds": [a for a in addresses if a in held]}


json.dump({"node": socket.gethostname(), "time": time.time(), "nginx": nginx(), "haproxy": haproxy(),
           "keepalived": keepalived()}, sys.stdout)
