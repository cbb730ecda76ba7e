"""Read and change the edge load balancers of a target, over SSH.

Each node gets one script per read or change (`script`): the node's parts
(automata_lb/node/) and the operations the tier adapters (tiers.py) ask of
them, all nodes at once.  Configuration changes are converges of
playbooks/edge.yml, except what is made here on the nodes (checked, then
reloaded), each after the inventory says the same, so the next converge
changes nothing:
- the backend instances: stable servers added and removed line by line as
  the render would list them (set_members, seconds), else the configuration
  a converge would write, rendered here by the roles (playbooks/render.yml)
  and installed where it differs (apply_inventory, ten seconds or more);
- the canary share, which a progressive rollout moves every few seconds;
- instances drained while they are replaced.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from traffic import model

from . import inventory
from .node import haproxy as node_haproxy
from .targets import ROOT, EdgeNode, Target, TargetError
from .tiers import EDGE, HAPROXY, KEEPALIVED, NGINX, Op, Tier

# On the node, a finder serves the shipped parts as the modules they are
# here (automata_lb.node.*), then main runs the request.  (importlib.abc
# and .util would cost every call the import of typing.)
_LOADER = """
import sys
from importlib.machinery import ModuleSpec


class Shipped:
    def find_spec(self, name, path=None, target=None):
        if name in SOURCES:
            return ModuleSpec(name, self, is_package=name.count(".") < 2)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(SOURCES[module.__name__], "<automata-lb " + module.__name__ + ">", "exec"), module.__dict__)


sys.meta_path.insert(0, Shipped())
from automata_lb.node import main
main.main(REQUEST)
"""

stat_rows = node_haproxy.stat_rows
# What a node is asked for its state.
PROBE = (Op("system", "clock"), NGINX.live(), HAPROXY.live(), KEEPALIVED)


@functools.cache
def _source(module: str) -> str:
    return Path(__file__).with_name("node").joinpath(f"{module}.py").read_text()


def script(request: dict) -> str:
    """The Python the node runs for `request` ({paths, ops}): the package,
    main, system and the parts the operations name."""
    parts = dict.fromkeys(["system", *(part for part, _, _ in request["ops"])])
    sources = {"automata_lb": "", "automata_lb.node": _source("__init__"), "automata_lb.node.main": _source("main"),
               **{f"automata_lb.node.{part}": _source(part) for part in parts}}
    return f"SOURCES = {sources!r}\nREQUEST = {request!r}\n" + _LOADER


@functools.cache
def _nginx_config_files() -> tuple[str, ...]:
    """The files of the NGINX tree the role renders, from the role itself."""
    return tuple(yaml.safe_load((ROOT / "roles/nginx_lb/vars/main.yml").read_text())["_nginx_lb_config_files"])


def _paths(node: EdgeNode) -> dict:
    """Where `node` keeps what the parts read and change (its inventory's say)."""
    p = node.paths
    return {"nginx_conf_dir": p.nginx_conf_dir, "nginx_staging_dir": p.nginx_staging_dir,
            "nginx_config_files": list(_nginx_config_files()), "haproxy_config_dir": p.haproxy_config_dir,
            "haproxy_config": p.haproxy_config, "haproxy_socket": p.haproxy_socket}


def run_on(node: EdgeNode, ops: Iterable[Op], timeout: float = 60) -> dict:
    """`ops` on `node`, in order, in one SSH round trip: {part: its answer},
    or {"error": why} (the node's refusal, or why it could not be asked)."""
    request = {"paths": _paths(node), "ops": [op.request() for op in ops]}
    try:
        # -I -S: the standard library alone, whatever the node's user has installed.
        proc = node.run("python3", "-I", "-S", "-", stdin=script(request), timeout=timeout)
    except TargetError as exc:
        return {"error": str(exc)}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": (proc.stderr or proc.stdout).strip()[-300:] or f"exit {proc.returncode}"}


def run_everywhere(target: Target, what: str, ops: Iterable[Op] | Callable[[EdgeNode], Iterable[Op]]) -> dict[str, dict]:
    """`ops` (or `ops(node)`) on every node at once; {node: its answer}.
    Raises, naming each node that refused, after every node was tried."""
    def one(node: EdgeNode) -> tuple[str, dict]:
        return node.name, run_on(node, ops(node) if callable(ops) else ops)

    with ThreadPoolExecutor(max_workers=max(1, len(target.edges))) as pool:
        results = dict(pool.map(one, target.edges))
    refused = {name: r["error"] for name, r in results.items() if "error" in r}
    if refused:
        raise TargetError(f"{what} refused: " + "; ".join(f"{n}: {e}" for n, e in refused.items()))
    return results


def probe(node: EdgeNode) -> dict:
    """What one node runs: NGINX, HAProxy (every server, the canary share)
    and keepalived; {"reachable": False, "error"} when it cannot be asked."""
    answer = run_on(node, PROBE, timeout=30)
    if "error" in answer:
        return {"node": node.name, "reachable": False, "error": answer["error"]}
    return {"node": node.name, "reachable": True, "time": answer.pop("system"), **answer}


def probe_all(target: Target) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, len(target.edges))) as pool:
        return list(pool.map(probe, target.edges))


def runtime(node: EdgeNode, *commands: str) -> str:
    """HAProxy runtime API commands on one node; raises when any is refused."""
    answer = run_on(node, [HAPROXY.command(*commands)], timeout=30)
    if "error" in answer:
        raise TargetError(f"{node.name}: {answer['error']}")
    return answer["haproxy"]


def haproxy_canary_share(node: EdgeNode) -> int:
    """The canary share one node's HAProxy runs now (its process variable)."""
    answer = run_on(node, [HAPROXY.share_now()], timeout=30)
    share = node_haproxy.var_value(answer.get("haproxy", ""))
    if share is None:
        raise TargetError(f"{node.name}: HAProxy runs no canary share: {answer}")
    return share


def set_haproxy_canary_share(node: EdgeNode, share: int) -> None:
    """HAProxy alone, at runtime, until its next reload: what a drill moves.
    A change meant to last goes through set_canary_share."""
    answer = run_on(node, [HAPROXY.share(share, runtime_only=True)], timeout=30)
    if "error" in answer:
        raise TargetError(f"{node.name}: {answer['error']}")


def set_canary_share(target: Target, share: int, *, record: bool = False) -> dict[str, dict]:
    """Every node's NGINX and HAProxy send `share` percent of canary-class
    requests to the canary; {node: {"haproxy": N, "nginx": how}}.  With
    `record`, the inventory says so first (traffic_policy_overrides.canary.share,
    comments kept), so a converge afterwards changes nothing: a change meant
    to last.  Without, the nodes alone, until the next converge."""
    if record:
        overrides = inventory.read(target.inventory, "traffic_policy_overrides", {}) or {}
        if model.load(overrides=overrides).canary.share != share:
            wanted = copy.deepcopy(overrides)
            wanted.setdefault("canary", {})["share"] = share
            inventory.write(target.inventory, {"traffic_policy_overrides": wanted})
    return run_everywhere(target, f"canary share {share}%", [t.share(share) for t in EDGE])


def drain(target: Target, names: list[str], tiers: Iterable = EDGE) -> dict[str, dict]:
    """`names` take no new requests on every node: HAProxy drains them at
    runtime (sessions end), NGINX marks them down (checked file + reload)."""
    return run_everywhere(target, f"draining {', '.join(names)}", [t.drain(names) for t in tiers])


def undrain(target: Target, names: list[str]) -> dict[str, dict]:
    return run_everywhere(target, f"putting back {', '.join(names)}", [t.undrain(names) for t in EDGE])


def add_at_runtime(target: Target, server: dict, stable: list[str]) -> bool:
    """A new stable instance in every HAProxy backend where the `stable`
    servers serve, at once (NGINX takes it with its pools' next write);
    False when every node had it already."""
    answers = run_everywhere(target, f"adding {server['name']} to HAProxy", [HAPROXY.add(server, stable)])
    return any(a["haproxy"] for a in answers.values())


def set_members(target: Target, *, add: list[dict], remove: list[str], peer: str) -> dict[str, dict]:
    """Stable servers added to (copies of `peer`'s lines) and removed from
    every pool of both load balancers on every node, as the render of the
    changed inventory lists them; {node: {"nginx": how, "haproxy": how}}.
    Only for servers and a peer that carry the role's defaults alone
    (backend_changes decides); anything else goes through apply_inventory."""
    return run_everywhere(target, "the pools' members", [t.members(add, remove, peer) for t in EDGE])


def apply_inventory(target: Target, say: Callable[[str], None]) -> dict[str, dict]:
    """What a converge would write for the load balancers, without a
    converge: playbooks/render.yml renders every node's NGINX tree and
    HAProxy configuration here from the inventory, and each node installs
    the files that differ, through `nginx -t` and `haproxy -c`,
    then reloads.  The next converge finds them as it would write them.
    {node: {"nginx": how, "haproxy": how}}."""
    with tempfile.TemporaryDirectory(prefix="automata-lb-render-") as tmp:
        directory = Path(tmp)
        rendered = inventory.render(target.inventory, directory)
        if rendered.rc != 0:
            raise TargetError(f"rendering the configuration failed (rc={rendered.rc}); nothing was installed:\n"
                              + rendered.output[-2000:])
        say(f"rendered every node's NGINX and HAProxy configuration ({rendered.seconds:.0f}s)")

        def files(node: EdgeNode, tier: Tier) -> dict[str, str]:
            root = directory / node.name / tier.name
            return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}

        per_node = {node.name: [t.install(files(node, t)) for t in EDGE] for node in target.edges}
    return run_everywhere(target, "installing the rendered configuration", lambda node: per_node[node.name])


def backend_versions(target: Target, backends: list[dict]) -> dict[str, str]:
    """What each backend says it runs (X-Backend-Version of its /health),
    asked from the first edge node: the network path the load balancers use."""
    urls = {b["name"]: f"http://{b['address']}:{b['port']}/health" for b in backends}
    answer = run_on(target.edges[0], [Op("system", "versions", {"urls": urls})], timeout=30)
    if "error" in answer:
        raise TargetError(f"{target.edges[0].name}: could not ask the backends: {answer['error']}")
    return answer["system"]
