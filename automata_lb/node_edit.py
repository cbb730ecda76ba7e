"""Runs ON an edge node (python3 -, over SSH): the changes automata-lb makes
between converges, then one JSON line with what the node now does.

edge.py prepends `ARGS = {...}`: the operation and its inputs.  Standard
library only.

- `share`: the canary share on both load balancers.
  - NGINX: the share lives alone in conf.d/canary.conf (the text comes
    rendered by traffic/nginx.py).
  - HAProxy: the process variable the canary dice reads is set through the
    runtime API (no reload, effective for the next request), and the same
    number is written into haproxy.cfg after `haproxy -c` accepts the edited
    copy, so a later reload keeps it.
- `install`: the configuration a converge would write (rendered on the
  controller by playbooks/render.yml), when the backend instances change
  between converges: NGINX's files that differ go through the staging tree
  and `nginx -t`, HAProxy's through `haproxy -c`, then each reloads.
- `members`: stable instances added to and removed from every pool of both
  load balancers, as the render of the changed inventory would list them:
  a new server's line is its peer's line (the last stable server, which the
  caller made sure carries only the role's defaults) with the name and
  address changed, right after it; a removed server's lines go.  NGINX
  reloads after `nginx -t`; HAProxy's configuration is written after
  `haproxy -c` and reloads only to let removed servers go (added ones are
  already in through the runtime API).  Seconds, where a render through
  Ansible takes ten or more.
- `nginx_servers`: servers marked `down` (or not) in NGINX's pools, before an
  instance stops and after it is back.  NGINX has no runtime API; left alone,
  it learns of a stopped instance from failed requests and then shuns it for
  `fail_timeout`, and a quick rolling replacement can leave a pool with no
  live server.  HAProxy's servers are drained through its runtime API by the
  caller.

Every NGINX change goes into the role's staging tree first; `nginx -t` checks
the whole staged configuration, and only then is the file copied into the
live tree and NGINX reloaded (new workers, no dropped connection).  A refused
file is taken back out of the staging tree: the running NGINX never saw it.

The next converge renders these files from the inventory: the caller keeps
the canary share there too, and a server is only down while it is replaced.
"""

import json
import os
import re
import socket
import subprocess
import time

ARGS = globals().get("ARGS", {})
# An upstream server line as traffic/nginx.py renders it: `server ADDR flags;  # NAME`.
SERVER_LINE = re.compile(r"^(\s*server\s+[^;#]*?)(\s+down)?;(\s+#\s*(\S+))\s*$", re.MULTILINE)


def replace(path, text, mode=0o644):
    tmp = path + ".automata-lb"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read(path):
    with open(path) as f:
        return f.read()


def refuse(message):
    raise SystemExit(json.dumps({"error": message}))


def runtime(command):
    # probe.py has the same few lines: each script travels to the node alone.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(ARGS["haproxy_socket"])
        s.sendall((command + "\n").encode())
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def nginx_serving():
    """The NGINX workers that accept connections: a worker told to stop
    renames itself "nginx: worker process is shutting down"."""
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].strip()
        except OSError:
            continue
        if title == b"nginx: worker process":
            pids.add(pid)
    return pids


def haproxy_serving():
    """The HAProxy worker that answers the runtime API: after a reload the
    old worker lets go of its listeners, the admin socket among them;
    nobody while the socket changes hands."""
    try:
        text = runtime("show info")
    except OSError:
        return set()
    info = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {info.get("Pid")} - {None}


SERVING = {"nginx": nginx_serving, "haproxy": haproxy_serving}


def reload(service):
    """`systemctl reload` returns once the signal is sent, while the old
    workers still accept connections under the old configuration: wait
    until only new ones do, so the caller's next request meets what it
    installed."""
    before = SERVING[service]()
    subprocess.run(["systemctl", "reload", service], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while True:
        now = SERVING[service]()
        if now and not now & before:
            return
        if time.monotonic() > deadline:
            refuse(f"{service} reloaded, but after 30 s its old workers still accept connections")
        time.sleep(0.05)


def stage(changes):
    """The staging tree made the live tree plus `changes` ({path under the
    conf dir: text}), whatever a failed run (a refused converge, a refused
    edit) left there, so what `nginx -t` checks is exactly what will run;
    None when the candidate passes, else nginx's complaint."""
    conf, staging = ARGS["nginx_conf_dir"], ARGS["nginx_staging_dir"]
    live_tls = os.path.join(conf, "tls")
    names = list(dict.fromkeys([*ARGS["nginx_config_files"], *changes]))
    if os.path.isdir(live_tls):
        names += [os.path.join("tls", n) for n in sorted(os.listdir(live_tls))]
    for name in names:
        live = os.path.join(conf, name)
        if name not in changes and not os.path.exists(live):
            continue
        text = changes[name] if name in changes else read(live)
        staged = os.path.join(staging, name)
        if not os.path.exists(staged) or read(staged) != text:
            os.makedirs(os.path.dirname(staged), exist_ok=True)
            replace(staged, text, 0o600 if name.startswith("tls") else 0o644)
    check = subprocess.run(["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(staging, "nginx.conf")],
                           capture_output=True, text=True)
    return check.stderr.strip() if check.returncode != 0 else None


def nginx_file(name, text):
    """Checked, then live, then reloaded; "unchanged" when live already says it."""
    live = os.path.join(ARGS["nginx_conf_dir"], name)
    if read(live) == text:
        return "unchanged"
    refused = stage({name: text})
    if refused:
        refuse(f"nginx -t refused {name}: " + refused)
    replace(live, text)
    reload("nginx")
    return "reloaded"


def checked_haproxy_config(text, what):
    """haproxy.cfg replaced by `text` once `haproxy -c` accepts it, with the
    owner, group and mode the role gave the file (it holds the stats
    password); refused, the live file stays as it was."""
    cfg = ARGS["haproxy_config"]
    candidate = cfg + ".automata-lb"
    with open(candidate, "w") as f:
        f.write(text)
    # -dW as the role checks: a warning refuses the file too.
    check = subprocess.run(["/usr/sbin/haproxy", "-dW", "-c", "-q", "-f", candidate], capture_output=True, text=True)
    if check.returncode != 0:
        os.unlink(candidate)
        refuse(f"haproxy -c refused {what}: " + check.stderr.strip())
    st = os.stat(cfg)
    os.chown(candidate, st.st_uid, st.st_gid)
    os.chmod(candidate, st.st_mode & 0o777)
    os.replace(candidate, cfg)


def haproxy_share(share):
    cfg = ARGS["haproxy_config"]
    text = read(cfg)
    var = ARGS["haproxy_share_var"]
    pattern = re.compile(r"(set-var\s+" + re.escape(var) + r"\s+int\()\d+(\))")
    if not pattern.search(text):
        refuse(cfg + " sets no " + var + " (no canary servers on this edge?)")
    edited = pattern.sub(rf"\g<1>{share}\g<2>", text)
    if edited != text:
        checked_haproxy_config(edited, "the edited config")
    answer = runtime(f"experimental-mode on; set var {var} int({share})").strip()
    if answer:
        refuse("HAProxy runtime API: " + answer)
    now = runtime(f"get var {var}")
    found = re.search(r"value=<(\d+)>", now)
    return int(found.group(1)) if found else None


def share():
    # HAProxy first: instant, and it is the tier a failed NGINX check must not hold back.
    result = {"haproxy": haproxy_share(int(ARGS["share"]))}
    result["nginx"] = nginx_file(ARGS["nginx_canary_file"], ARGS["nginx_canary_text"])
    return result


def mark_servers(text, down, up):
    """`text` with the servers named in `down` marked down and those in `up`
    not; and the names it has of either."""
    found = set()

    def mark(m):
        server = m.group(4)
        if server not in set(down) | set(up):
            return m.group(0)
        found.add(server)
        return m.group(1) + (" down" if server in down else "") + ";" + m.group(3)

    return SERVER_LINE.sub(mark, text), found


def nginx_servers():
    name = ARGS["nginx_upstreams_file"]
    edited, found = mark_servers(read(os.path.join(ARGS["nginx_conf_dir"], name)), ARGS["down"], ARGS["up"])
    # A server NGINX does not have (a new instance before its converge) is
    # not an error: there is nothing to take out or put back.
    return {"nginx": nginx_file(name, edited), "servers": sorted(found)}


HAPROXY_SERVER = re.compile(r"^\s*server\s+(\S+)\s")


def server_name(line):
    """The server a line of NGINX's pools or of haproxy.cfg lists, or None."""
    found = SERVER_LINE.match(line) or HAPROXY_SERVER.match(line)
    if not found:
        return None
    return found.group(4) if found.re is SERVER_LINE else found.group(1)


def with_members(text, add, remove, peer):
    """`text` without the lines of the servers in `remove`, and with a copy of
    each line of `peer` for every server of `add` right after it."""
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


def members():
    add, remove, peer = ARGS["add"], set(ARGS["remove"]), ARGS["peer"]
    name = ARGS["nginx_upstreams_file"]
    result = {"nginx": nginx_file(name, with_members(read(os.path.join(ARGS["nginx_conf_dir"], name)),
                                                     add, remove, peer))}
    cfg = ARGS["haproxy_config"]
    text = read(cfg)
    edited = with_members(text, add, remove, peer)
    if edited == text:
        result["haproxy"] = "unchanged"
    else:
        checked_haproxy_config(edited, "the edited config")
        if remove:
            reload("haproxy")
        result["haproxy"] = "reloaded" if remove else "written (servers added at runtime)"
    return result


def install_nginx(files):
    """The rendered tree `files` ({path under the conf dir: text}): the files
    that differ from the live tree are staged, the staged tree as a whole
    passes `nginx -t`, then they go live and NGINX reloads."""
    conf = ARGS["nginx_conf_dir"]
    changed = [name for name, text in files.items() if not os.path.exists(os.path.join(conf, name))
               or read(os.path.join(conf, name)) != text]
    if not changed:
        return "unchanged"
    refused = stage(files)
    if refused:
        refuse("nginx -t refused " + ", ".join(changed) + ": " + refused)
    for name in changed:
        replace(os.path.join(conf, name), files[name])
    reload("nginx")
    return "reloaded: " + ", ".join(changed)


def install_haproxy(files):
    """haproxy.cfg and its rate-limit map as rendered: a map the node lacks is
    written beside the others (named by its content), the configuration
    passes `haproxy -c`, goes live and HAProxy reloads (hitless); the maps
    and bundles it no longer names are removed, as a converge removes them."""
    cfg = ARGS["haproxy_config"]
    directory = os.path.dirname(cfg)
    text = files["haproxy.cfg"]
    if read(cfg) == text:
        return "unchanged"
    st = os.stat(cfg)
    for name, content in files.items():
        path = os.path.join(directory, name)
        if name != "haproxy.cfg" and not os.path.exists(path):
            replace(path, content)
            os.chown(path, 0, st.st_gid)
    checked_haproxy_config(text, "the rendered config")
    reload("haproxy")
    for pattern, folder in ((r"rate_limits\.\w+\.map$", "maps"), (r"edge\.\w+\.pem$", "certs")):
        for name in os.listdir(os.path.join(directory, folder)) if os.path.isdir(os.path.join(directory, folder)) else []:
            path = os.path.join(directory, folder, name)
            if re.match(pattern, name) and path not in text:
                os.unlink(path)
    return "reloaded"


def install():
    # HAProxy first: its servers are already in place through the runtime
    # API, and a refused NGINX file must not hold it back.
    return {"haproxy": install_haproxy(ARGS["haproxy_files"]), "nginx": install_nginx(ARGS["nginx_files"])}


if __name__ == "__main__":
    print(json.dumps({"share": share, "nginx_servers": nginx_servers, "members": members,
                      "install": install}[ARGS["op"]]()))
