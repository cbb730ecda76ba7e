"""Read and change the edge load balancers of a target, over SSH.

Reads go through probe.py (one SSH round trip per node, run in parallel);
changes go through HAProxy's runtime API on each node.  Configuration
changes are converges of playbooks/edge.yml, except three that
node_edit.py makes on the nodes (checked, then reloaded), each after the
inventory says the same, so the next converge changes nothing:
- the backend instances: stable servers added and removed line by line as
  the render would list them (set_members, seconds), else the configuration
  a converge would write, rendered here by the roles (playbooks/render.yml)
  and installed where it differs (apply_inventory, ten seconds or more);
- the canary share, which a progressive rollout moves every few seconds;
- NGINX servers marked down while their instance is replaced (HAProxy's are
  drained through its runtime API).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from traffic import haproxy as haproxy_render
from traffic import model
from traffic import nginx as nginx_render

from . import inventory
from .targets import ROOT, EdgeNode, Target, TargetError

PROBE = Path(__file__).with_name("probe.py").read_text()
NODE_EDIT = Path(__file__).with_name("node_edit.py").read_text()


@functools.cache
def _nginx_config_files() -> tuple[str, ...]:
    """The files of the NGINX tree the role renders, from the role itself."""
    return tuple(yaml.safe_load((ROOT / "roles/nginx_lb/vars/main.yml").read_text())["_nginx_lb_config_files"])


def _paths(node: EdgeNode) -> dict:
    """What the node scripts are told of where things are on `node`."""
    p = node.paths
    return {"nginx_conf_dir": p.nginx_conf_dir, "nginx_staging_dir": p.nginx_staging_dir,
            "haproxy_config_dir": p.haproxy_config_dir, "haproxy_config": p.haproxy_config,
            "haproxy_socket": p.haproxy_socket, "haproxy_share_var": haproxy_render.CANARY_SHARE_VAR,
            "nginx_config_files": _nginx_config_files()}


def probe(node: EdgeNode) -> dict:
    proc = node.run("python3", "-", stdin=f"ARGS = {json.dumps(_paths(node))}\n" + PROBE)
    if proc.returncode != 0:
        return {"node": node.name, "reachable": False, "error": (proc.stderr or proc.stdout).strip()[-300:]}
    return {"reachable": True, **json.loads(proc.stdout), "node": node.name}


def probe_all(target: Target) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, len(target.edges))) as pool:
        return list(pool.map(probe, target.edges))


def stat_rows(text: str) -> list[dict[str, str]]:
    """HAProxy's `show stat` CSV, one dict per proxy or server row.  (probe.py
    reads it on the node with the same few lines: it travels alone.)"""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def runtime(node: EdgeNode, *commands: str) -> str:
    """HAProxy runtime API commands on one node; raises when any is refused."""
    script = "; ".join(commands)
    proc = node.run("socat", "-t", "5", "stdio", f"UNIX-CONNECT:{node.paths.haproxy_socket}", stdin=script + "\n")
    out = proc.stdout.strip()
    if proc.returncode != 0:
        raise TargetError(f"{node.name}: runtime API: {proc.stderr.strip()}")
    # What `show stat` lists may itself say "error" (a server's last check):
    # only the answer to a change is searched for the word.
    changes = not all(c.startswith(("show ", "get ", "experimental-mode")) for c in commands)
    for line in out.splitlines():
        if line.startswith(("Unknown command", "No such", "Invalid", "Require", "Permission denied")) \
                or (changes and "error" in line.lower()):
            raise TargetError(f"{node.name}: runtime API refused `{script}`: {line}")
    return out


def haproxy_canary_share(node: EdgeNode) -> int:
    """The canary share one node's HAProxy runs now (its process variable)."""
    out = runtime(node, f"get var {haproxy_render.CANARY_SHARE_VAR}")
    if "value=<" not in out:
        raise TargetError(f"{node.name}: HAProxy has no {haproxy_render.CANARY_SHARE_VAR}: {out!r}")
    return int(out.rsplit("<", 1)[1].rstrip(">"))


def set_haproxy_canary_share(node: EdgeNode, share: int) -> None:
    """HAProxy alone, at runtime, until its next reload: what a drill moves.
    A change meant to last goes through set_canary_weight."""
    runtime(node, "experimental-mode on", f"set var {haproxy_render.CANARY_SHARE_VAR} int({share})")


def _edit_all(target: Target, what: str, args: dict, per_node: dict[str, dict] | None = None) -> dict[str, dict]:
    """node_edit.py with `args` (and the node's own `per_node` entries) on
    every node at once; {node: its answer}.  Raises, naming each node that
    refused, after every node was tried."""
    def one(node: EdgeNode) -> tuple[str, dict]:
        script = f"ARGS = {json.dumps({**args, **_paths(node), **(per_node or {}).get(node.name, {})})}\n" + NODE_EDIT
        try:
            proc = node.run("python3", "-", stdin=script, timeout=60)
        except TargetError as exc:
            return node.name, {"error": str(exc)}
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        try:
            return node.name, json.loads(lines[-1])
        except (IndexError, ValueError):
            return node.name, {"error": (proc.stderr or proc.stdout).strip()[-300:] or f"exit {proc.returncode}"}

    with ThreadPoolExecutor(max_workers=max(1, len(target.edges))) as pool:
        results = dict(pool.map(one, target.edges))
    refused = {name: r["error"] for name, r in results.items() if "error" in r}
    if refused:
        raise TargetError(f"{what} refused: " + "; ".join(f"{n}: {e}" for n, e in refused.items()))
    return results


def set_canary_share(target: Target, share: int) -> dict[str, dict]:
    """Every node's NGINX and HAProxy send `share` percent of canary-class
    requests to the canary; {node: {"haproxy": N, "nginx": how}}."""
    return _edit_all(target, f"canary share {share}%",
                     {"op": "share", "share": share, "nginx_canary_file": nginx_render.CANARY_FILE,
                      "nginx_canary_text": nginx_render.canary_file(share)})


def set_nginx_servers(target: Target, *, down: list[str] = (), up: list[str] = ()) -> dict[str, dict]:
    """Mark servers `down` in (or back into) every NGINX pool that lists them,
    on every node; {node: {"nginx": how, "servers": the names it has}}."""
    return _edit_all(target, f"NGINX servers down={list(down)} up={list(up)}",
                     {"op": "nginx_servers", "down": list(down), "up": list(up),
                      "nginx_upstreams_file": nginx_render.UPSTREAMS_FILE})


def set_members(target: Target, *, add: list[dict], remove: list[str], peer: str) -> dict[str, dict]:
    """Stable servers added to (copies of `peer`'s lines) and removed from
    every pool of both load balancers on every node, as the render of the
    changed inventory lists them; {node: {"nginx": how, "haproxy": how}}.
    Only for servers and a peer that carry the role's defaults alone
    (backend_changes decides); anything else goes through apply_inventory."""
    return _edit_all(target, "the pools' members",
                     {"op": "members", "add": add, "remove": list(remove), "peer": peer,
                      "nginx_upstreams_file": nginx_render.UPSTREAMS_FILE})


def apply_inventory(target: Target, say: Callable[[str], None]) -> dict[str, dict]:
    """What a converge would write for the load balancers, without a
    converge: playbooks/render.yml renders every node's NGINX tree and
    HAProxy configuration here from the inventory, and node_edit.py installs
    on each node the files that differ, through `nginx -t` and `haproxy -c`,
    then reloads.  The next converge finds them as it would write them.
    {node: {"nginx": how, "haproxy": how}}."""
    with tempfile.TemporaryDirectory(prefix="automata-lb-render-") as tmp:
        directory = Path(tmp)
        rendered = inventory.render(target.inventory, directory)
        if rendered.rc != 0:
            raise TargetError(f"rendering the configuration failed (rc={rendered.rc}); nothing was installed:\n"
                              + rendered.output[-2000:])
        say(f"rendered every node's NGINX and HAProxy configuration ({rendered.seconds:.0f}s)")
        per_node = {}
        for node in target.edges:
            files = {}
            for lb in ("nginx", "haproxy"):
                root = directory / node.name / lb
                files[lb] = {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}
            per_node[node.name] = {"nginx_files": files["nginx"], "haproxy_files": files["haproxy"]}
    return _edit_all(target, "installing the rendered configuration", {"op": "install"}, per_node)


def set_canary_weight(target: Target, weight: int) -> dict[str, dict]:
    """The inventory's canary share (traffic_policy_overrides.canary.share,
    comments kept), then the same on every node: a converge afterwards
    changes nothing."""
    overrides = inventory.read(target.inventory, "traffic_policy_overrides", {}) or {}
    if model.load(overrides=overrides).canary.share != weight:
        wanted = copy.deepcopy(overrides)
        wanted.setdefault("canary", {})["share"] = weight
        inventory.write(target.inventory, {"traffic_policy_overrides": wanted})
    return set_canary_share(target, weight)


_VERSIONS = """
import json, urllib.request
out = {}
for name, url in URLS.items():
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            out[name] = r.headers.get("x-backend-version", "")
    except Exception as exc:
        out[name] = "unreachable: %s" % exc
print(json.dumps(out))
"""


def backend_versions(target: Target, backends: list[dict]) -> dict[str, str]:
    """What each backend says it runs (X-Backend-Version of its /health),
    asked from the first edge node: the network path the load balancers use."""
    urls = {b["name"]: f"http://{b['address']}:{b['port']}/health" for b in backends}
    proc = target.edges[0].run("python3", "-", stdin=f"URLS = {json.dumps(urls)}\n" + _VERSIONS)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise TargetError(f"{target.edges[0].name}: could not ask the backends: {proc.stderr.strip()[-300:]}") from None
