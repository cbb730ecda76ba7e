"""HAProxy on an edge node: the runtime API, its state, and the changes made
between converges.

The runtime API is a UNIX socket on the node (local only by design): every
read and change of the CLI, the drill and the tests goes through `ask` here,
shipped to the node.  A change meant to outlive the next reload is also
written into haproxy.cfg, after `haproxy -c` accepts the edited copy.

`paths` (from the inventory, through the controller): haproxy_config,
haproxy_config_dir, haproxy_socket.
"""

import csv
import io
import os
import re
import socket
import subprocess

from automata_lb.node import system

# Answers of the runtime API that mean a command was refused.
REFUSALS = ("Unknown command", "No such", "Invalid", "Require", "Permission denied")
READS = ("show ", "get ", "experimental-mode")
SERVER_LINE = re.compile(r"^\s*server\s+(\S+)\s")


def ask(paths, *commands):
    """Runtime API commands over one connection; their answers as one text.
    Raises OSError when the socket is not there (HAProxy down, or reloading)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(paths["haproxy_socket"])
        s.sendall(("; ".join(commands) + "\n").encode())
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def command(paths, commands):
    """`ask`, refused when HAProxy refuses any of `commands`.  What `show
    stat` lists may itself say "error" (a server's last check): only the
    answer to a change is searched for the word."""
    try:
        out = ask(paths, *commands).strip()
    except OSError as exc:
        raise system.Refused(f"runtime API at {paths['haproxy_socket']}: {exc}") from None
    changes = not all(c.startswith(READS) for c in commands)
    for line in out.splitlines():
        if line.startswith(REFUSALS) or (changes and "error" in line.lower()):
            raise system.Refused(f"runtime API refused `{'; '.join(commands)}`: {line}")
    return out


def stat_rows(text):
    """`show stat` CSV, one dict per proxy or server row."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def var_value(answer):
    """The number in `get var`'s answer ("proc.canary_share: type=sint
    value=<10>"), None when the variable is not set."""
    found = re.search(r"value=<(-?\d+)>", answer)
    return int(found.group(1)) if found else None


def serving(paths):
    """The HAProxy worker that answers the runtime API: after a reload the
    old worker lets go of its listeners, the admin socket among them;
    nobody while the socket changes hands."""
    try:
        text = ask(paths, "show info")
    except OSError:
        return set()
    info = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {info.get("Pid")} - {None}


def reload(paths):
    system.reload("haproxy", lambda: serving(paths))


def checked_config(paths, text, what):
    """haproxy.cfg replaced by `text` once `haproxy -c` accepts it, with the
    owner, group and mode the role gave the file (it holds the stats
    password); refused, the live file stays as it was."""
    cfg = paths["haproxy_config"]
    candidate = cfg + ".automata-lb"
    with open(candidate, "w") as f:
        f.write(text)
    # -dW as the role checks: a warning refuses the file too.
    check = subprocess.run(["/usr/sbin/haproxy", "-dW", "-c", "-q", "-f", candidate], capture_output=True, text=True)
    if check.returncode != 0:
        os.unlink(candidate)
        raise system.Refused(f"haproxy -c refused {what}: " + check.stderr.strip())
    st = os.stat(cfg)
    os.chown(candidate, st.st_uid, st.st_gid)
    os.chmod(candidate, st.st_mode & 0o777)
    os.replace(candidate, cfg)


def share(paths, var, share, runtime_only=False):
    """The canary share: the process variable the canary dice reads, set
    through the runtime API (no reload, the next request sees it), and the
    same number written into haproxy.cfg so a later reload keeps it.  With
    `runtime_only`, the variable alone, until the next reload (what a drill
    moves).  The share HAProxy runs afterwards."""
    if not runtime_only:
        cfg = paths["haproxy_config"]
        text = system.read(cfg)
        pattern = re.compile(r"(set-var\s+" + re.escape(var) + r"\s+int\()\d+(\))")
        if not pattern.search(text):
            raise system.Refused(cfg + " sets no " + var + " (no canary servers on this edge?)")
        edited = pattern.sub(rf"\g<1>{share}\g<2>", text)
        if edited != text:
            checked_config(paths, edited, "the edited config")
    command(paths, ["experimental-mode on", f"set var {var} int({share})"])
    return var_value(command(paths, [f"get var {var}"]))


def sections(rows, server):
    """The backends where `server` serves as a regular (not backup) server."""
    return [r["pxname"] for r in rows if r["svname"] == server and r.get("type") == "2" and r.get("bck") != "1"]


def servers(paths, names, state):
    """`names` set to `state` (drain, maint, ready) in every backend that
    holds them; {name: those backends}."""
    rows = stat_rows(command(paths, ["show stat"]))
    held = {name: sections(rows, name) for name in names}
    commands = [f"set server {section}/{name} state {state}" for name, found in held.items() for section in found]
    if commands:
        command(paths, commands)
    return held


def add(paths, server, stable):
    """A new stable instance ({name, address, port}) given traffic at once,
    as a dynamic server with health checks in every backend where the
    `stable` servers serve, at their weight; the backends it was added to
    (none when it is already there).  The configuration written next names it."""
    rows = stat_rows(command(paths, ["show stat"]))
    name = server["name"]
    if any(r["svname"] == name for r in rows):
        return []
    peers = [r for r in rows if r["svname"] in stable and r.get("type") == "2" and r.get("bck") != "1"]
    backends = sorted({r["pxname"] for r in peers})
    weight = next((int(r["weight"] or 0) for r in peers), 1)
    commands = []
    for section in backends:
        commands += [f"add server {section}/{name} {server['address']}:{server['port']} check weight {weight}",
                     f"enable health {section}/{name}", f"enable server {section}/{name}"]
    if commands:
        command(paths, commands)
    return backends


def server_name(line):
    found = SERVER_LINE.match(line)
    return found.group(1) if found else None


def pools_with(text, add, remove, peer):
    """haproxy.cfg `text` with `add` in (copies of `peer`'s lines) and `remove` out."""
    return system.with_members(text, add, set(remove), peer, server_name)


def members(paths, add, remove, peer):
    """haproxy.cfg as the render of the changed inventory lists its servers
    (copies of `peer`'s lines for `add`, `remove`'s lines gone), after
    `haproxy -c`; it reloads only to let removed servers go: added ones are
    already in through the runtime API."""
    text = system.read(paths["haproxy_config"])
    edited = pools_with(text, add, remove, peer)
    if edited == text:
        return "unchanged"
    checked_config(paths, edited, "the edited config")
    if remove:
        reload(paths)
        return "reloaded"
    return "written (servers added at runtime)"


def install(paths, files):
    """haproxy.cfg and its rate-limit map as rendered: a map the node lacks is
    written beside the others (named by its content), the configuration
    passes `haproxy -c`, goes live and HAProxy reloads (hitless); the maps
    and bundles it no longer names are removed, as a converge removes them."""
    cfg = paths["haproxy_config"]
    directory = os.path.dirname(cfg)
    text = files["haproxy.cfg"]
    if system.read(cfg) == text:
        return "unchanged"
    st = os.stat(cfg)
    for name, content in files.items():
        path = os.path.join(directory, name)
        if name != "haproxy.cfg" and not os.path.exists(path):
            system.replace(path, content)
            os.chown(path, 0, st.st_gid)
    checked_config(paths, text, "the rendered config")
    reload(paths)
    for pattern, folder in ((r"rate_limits\.\w+\.map$", "maps"), (r"edge\.\w+\.pem$", "certs")):
        for name in os.listdir(os.path.join(directory, folder)) if os.path.isdir(os.path.join(directory, folder)) else []:
            path = os.path.join(directory, folder, name)
            if re.match(pattern, name) and path not in text:
                os.unlink(path)
    return "reloaded"


def state(paths, var):
    """What HAProxy runs: service, version, a hash of its configuration, every
    server with its state, weight and sessions, and the canary share."""
    found = system.service("haproxy")
    found["version"] = system.run("haproxy", "-v").splitlines()[0].split()[2] if found["active"] else ""
    found["config_hash"] = system.digest([f"{paths['haproxy_config_dir']}/haproxy.cfg",
                                          f"{paths['haproxy_config_dir']}/maps/*"])
    try:
        rows, answer = stat_rows(ask(paths, "show stat")), ask(paths, f"get var {var}")
    except OSError:
        rows, answer = [], ""
    found["servers"] = [
        {"backend": r["pxname"], "server": r["svname"], "status": r["status"],
         "check": r["check_status"].lstrip("* "), "weight": int(r["weight"] or 0),
         "sessions": int(r["scur"] or 0), "address": r.get("addr", ""), "backup": r.get("bck") == "1"}
        for r in rows if r.get("svname") not in ("FRONTEND", "BACKEND", None) and r.get("type") == "2"]
    found["canary_share"] = var_value(answer)
    return found
