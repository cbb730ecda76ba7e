"""Files, services and their workers on an edge node (standard library only)."""

import glob
import hashlib
import os
import re
import subprocess
import time


class Refused(Exception):
    """A change the node would not make (a check failed); nothing went live."""


def read(path):
    with open(path) as f:
        return f.read()


def replace(path, text, mode=0o644):
    """`path` holds `text` at once or not at all (a rename over it)."""
    tmp = path + ".automata-lb"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def run(*argv):
    """A command's output (stdout and stderr), or the reason it did not run."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (proc.stdout + proc.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"


def digest(patterns):
    """A short hash of the files the glob `patterns` match, names included."""
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
    """systemd's view of a service: active, main pid, and its last reload."""
    out = run("systemctl", "show", name, "-p", "ActiveState", "-p", "MainPID")
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    pid = int(props.get("MainPID", "0") or 0)
    workers = children(pid) if pid else []
    # A reload replaces the workers and keeps the master: the newest worker
    # started at the last reload (or at the start).
    last = max((started(w) for w in workers), default=started(pid) if pid else None)
    return {"active": props.get("ActiveState") == "active", "pid": pid, "last_reload": last}


def reload(name, serving):
    """`systemctl reload` returns once the signal is sent, while the old
    workers still accept connections under the old configuration: wait
    until only new ones do (`serving()` names those that accept), so the
    caller's next request meets what it installed."""
    before = serving()
    subprocess.run(["systemctl", "reload", name], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while True:
        now = serving()
        if now and not now & before:
            return
        if time.monotonic() > deadline:
            raise Refused(f"{name} reloaded, but after 30 s its old workers still accept connections")
        time.sleep(0.05)


def with_members(text, add, remove, peer, server_name):
    """`text` without the lines of the servers in `remove`, and with a copy of
    each line of `peer` for every server of `add` ({name, address, port})
    right after it: the new server's name and address in place of the
    peer's.  `server_name(line)` is the server a line lists, or None."""
    peer_address = None
    out = []
    for line in text.split("\n"):
        name = server_name(line)
        if name in remove:
            continue
        out.append(line)
        if name == peer:
            if peer_address is None:
                peer_address = next(t for t in line.split() if re.match(r"^[^#=;]+:\d+$", t))
            for server in add:
                copied = re.sub(rf"(?<!\S){re.escape(peer)}(?!\S)", server["name"], line)
                out.append(re.sub(rf"(?<!\S){re.escape(peer_address)}(?!\S)",
                                  f"{server['address']}:{server['port']}", copied))
    return "\n".join(out)


def clock(paths):
    """The node's time (Unix seconds): what its other answers' times are read against."""
    return time.time()


def versions(paths, urls):
    """What each backend says it runs ({name: its health URL}): the
    X-Backend-Version of its answer, from where the load balancers ask."""
    import urllib.request  # here alone: it pulls in http and ssl, ~0.1 s that every other call would pay

    out = {}
    for name, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                out[name] = r.headers.get("x-backend-version", "")
        except Exception as exc:  # noqa: BLE001 - any failure is the answer: the backend is unreachable
            out[name] = f"unreachable: {exc}"
    return out
