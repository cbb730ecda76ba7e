"""NGINX on an edge node: its state, and the changes made between converges.

NGINX has no runtime API: every change is a file of the role's tree.  It
goes into the role's staging tree first; `nginx -t` checks the whole staged
configuration, and only then is the file copied into the live tree and
NGINX reloaded (new workers, no dropped connection).  A refused file stays
out of the live tree: the running NGINX never saw it.

`paths` (from the inventory, through the controller): nginx_conf_dir,
nginx_staging_dir, nginx_config_files (the files the role renders).
"""

import os
import re
import subprocess

from automata_lb.node import system

# An upstream server line as traffic/nginx.py renders it: `server ADDR flags;  # NAME`.
SERVER_LINE = re.compile(r"^(\s*server\s+[^;#]*?)(\s+down)?;(\s+#\s*(\S+))\s*$", re.MULTILINE)
# The canary line of the canary file (traffic/nginx.py canary_file): `    10% canary;`.
SHARE_LINE = re.compile(r"^\s*(\d+)%\s", re.MULTILINE)


def serving(among=None):
    """The NGINX workers that accept connections (of the processes `among`,
    else of all): a worker told to stop renames itself "nginx: worker
    process is shutting down"."""
    pids = set()
    for pid in map(str, among) if among is not None else filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].strip()
        except OSError:
            continue
        if title == b"nginx: worker process":
            pids.add(pid)
    return pids


def share_of(text):
    """The canary share a canary file sets (0 when it splits nothing off),
    None when the text is no canary file."""
    found = SHARE_LINE.search(text)
    return int(found.group(1)) if found else (0 if "split_clients" in text else None)


def stage(paths, changes):
    """The staging tree made the live tree plus `changes` ({path under the
    conf dir: text}), whatever a failed run (a refused converge, a refused
    edit) left there, so what `nginx -t` checks is exactly what will run;
    None when the candidate passes, else nginx's complaint."""
    conf, staging = paths["nginx_conf_dir"], paths["nginx_staging_dir"]
    live_tls = os.path.join(conf, "tls")
    names = list(dict.fromkeys([*paths["nginx_config_files"], *changes]))
    if os.path.isdir(live_tls):
        names += [os.path.join("tls", n) for n in sorted(os.listdir(live_tls))]
    for name in names:
        live = os.path.join(conf, name)
        if name not in changes and not os.path.exists(live):
            continue
        text = changes[name] if name in changes else system.read(live)
        staged = os.path.join(staging, name)
        if not os.path.exists(staged) or system.read(staged) != text:
            os.makedirs(os.path.dirname(staged), exist_ok=True)
            system.replace(staged, text, 0o600 if name.startswith("tls") else 0o644)
    check = subprocess.run(["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(staging, "nginx.conf")],
                           capture_output=True, text=True)
    return check.stderr.strip() if check.returncode != 0 else None


def put(paths, name, text):
    """One file of the tree: checked, then live, then reloaded; "unchanged"
    when the live file already says it."""
    live = os.path.join(paths["nginx_conf_dir"], name)
    if system.read(live) == text:
        return "unchanged"
    refused = stage(paths, {name: text})
    if refused:
        raise system.Refused(f"nginx -t refused {name}: " + refused)
    system.replace(live, text)
    system.reload("nginx", serving)
    return "reloaded"


def share(paths, file, text):
    """The canary share: it lives alone in the canary file, rendered by
    traffic/nginx.py on the controller."""
    return put(paths, file, text)


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


def servers(paths, file, down=(), up=()):
    """Servers marked down in (or back into) every pool that lists them,
    before an instance stops and after it is back.  Left alone, NGINX learns
    of a stopped instance from failed requests and then shuns it for
    `fail_timeout`, and a quick rolling replacement can leave a pool with no
    live server.  A server NGINX does not list is not an error: there is
    nothing to take out or put back."""
    edited, found = mark_servers(system.read(os.path.join(paths["nginx_conf_dir"], file)), down, up)
    return {"how": put(paths, file, edited), "servers": sorted(found)}


def server_name(line):
    found = SERVER_LINE.match(line)
    return found.group(4) if found else None


def pools_with(text, add, remove, peer):
    """The pools `text` with `add` in (copies of `peer`'s lines) and `remove` out."""
    return system.with_members(text, add, set(remove), peer, server_name)


def members(paths, file, add, remove, peer):
    """Stable servers added to and removed from every pool, as the render
    of the changed inventory lists them."""
    return put(paths, file, pools_with(system.read(os.path.join(paths["nginx_conf_dir"], file)), add, remove, peer))


def install(paths, files):
    """The rendered tree `files` ({path under the conf dir: text}): the files
    that differ from the live tree are staged, the staged tree as a whole
    passes `nginx -t`, then they go live and NGINX reloads."""
    conf = paths["nginx_conf_dir"]
    changed = [name for name, text in files.items() if not os.path.exists(os.path.join(conf, name))
               or system.read(os.path.join(conf, name)) != text]
    if not changed:
        return "unchanged"
    refused = stage(paths, files)
    if refused:
        raise system.Refused("nginx -t refused " + ", ".join(changed) + ": " + refused)
    for name in changed:
        system.replace(os.path.join(conf, name), files[name])
    system.reload("nginx", serving)
    return "reloaded: " + ", ".join(changed)


def state(paths, canary_file):
    """What NGINX runs: service, version, a hash of its tree, the canary share."""
    conf = paths["nginx_conf_dir"]
    found = system.service("nginx")
    found["version"] = system.run("nginx", "-v").rpartition("/")[2]
    found["config_hash"] = system.digest([f"{conf}/nginx.conf", f"{conf}/proxy_params", f"{conf}/conf.d/*"])
    try:
        found["canary_share"] = share_of(system.read(os.path.join(conf, canary_file)))
    except OSError:
        found["canary_share"] = None
    return found
