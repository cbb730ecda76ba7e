"""Runs ON an edge node (python3 -, over SSH): set the canary share on both
load balancers and print one JSON line with what each one now sends.

edge.set_canary_share prepends `ARGS = {...}` (the share, the NGINX file
rendered by traffic/nginx.py, the paths).  Standard library only.

- NGINX: the share lives alone in conf.d/canary.conf.  The new file goes into
  the role's staging tree, `nginx -t` checks the whole staged configuration,
  and only then is it copied into the live tree and NGINX reloaded (new
  workers, no dropped connection).  A refused file is taken back out of the
  staging tree; the running NGINX never saw it.
- HAProxy: the process variable the canary dice reads is set through the
  runtime API (no reload, effective for the next request), and the same
  number is written into haproxy.cfg after `haproxy -c` accepts the edited
  copy, so a later reload keeps it.

The inventory is changed by the caller as well, so the next converge of
playbooks/edge.yml writes exactly these files and reports no change.
"""

import json
import os
import re
import socket
import subprocess
import sys

ARGS = globals().get("ARGS") or json.loads(sys.argv[1])
SHARE = int(ARGS["share"])


def replace(path, text):
    tmp = path + ".automata-lb"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read(path):
    with open(path) as f:
        return f.read()


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


def nginx():
    live = os.path.join(ARGS["nginx_conf_dir"], "conf.d", "canary.conf")
    staged = os.path.join(ARGS["nginx_staging_dir"], "conf.d", "canary.conf")
    before = read(staged)
    if read(live) == ARGS["nginx_file"]:
        return "unchanged"
    replace(staged, ARGS["nginx_file"])
    check = subprocess.run(["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(ARGS["nginx_staging_dir"], "nginx.conf")],
                           capture_output=True, text=True)
    if check.returncode != 0:
        replace(staged, before)
        raise SystemExit(json.dumps({"error": "nginx -t refused the canary share: " + check.stderr.strip()}))
    replace(live, ARGS["nginx_file"])
    subprocess.run(["systemctl", "reload", "nginx"], check=True, capture_output=True)
    return "reloaded"


def haproxy():
    cfg = ARGS["haproxy_config"]
    text = read(cfg)
    pattern = re.compile(r"(set-var\s+proc\.canary_percent\s+int\()\d+(\))")
    if not pattern.search(text):
        raise SystemExit(json.dumps({"error": cfg + " sets no proc.canary_percent (no canary servers on this edge?)"}))
    edited = pattern.sub(rf"\g<1>{SHARE}\g<2>", text)
    if edited != text:
        candidate = cfg + ".automata-lb"
        with open(candidate, "w") as f:
            f.write(edited)
        # -dW as the role checks: a warning refuses the file too.
        check = subprocess.run(["/usr/sbin/haproxy", "-dW", "-c", "-q", "-f", candidate],
                               capture_output=True, text=True)
        if check.returncode != 0:
            os.unlink(candidate)
            raise SystemExit(json.dumps({"error": "haproxy -c refused the edited config: " + check.stderr.strip()}))
        # The owner, group and mode the role gave it (the file holds the stats password).
        st = os.stat(cfg)
        os.chown(candidate, st.st_uid, st.st_gid)
        os.chmod(candidate, st.st_mode & 0o777)
        os.replace(candidate, cfg)
    answer = runtime(f"experimental-mode on; set var proc.canary_percent int({SHARE})").strip()
    if answer:
        raise SystemExit(json.dumps({"error": "HAProxy runtime API: " + answer}))
    now = runtime("get var proc.canary_percent")
    found = re.search(r"value=<(\d+)>", now)
    return int(found.group(1)) if found else None


# HAProxy first: instant, and it is the tier a failed NGINX check must not hold back.
result = {"haproxy": haproxy()}
result["nginx"] = nginx()
print(json.dumps(result))
