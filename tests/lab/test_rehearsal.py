"""The lab's nodes through a production-shaped inventory (.lab/rehearsal,
made by `python -m lab up`): Ansible and the CLI log in as `deploy`, a user
who is not root, and become root through sudo; the stats and VRRP passwords
are in Ansible Vault; the CLI finds Prometheus through the inventory and
starts and stops backend instances through the instance playbook the
inventory names (lab/instance.yml), as a production inventory names its
own.

The playbook converges the nodes through it and finds nothing to change
(tests/lab/test_playbook.py: its second converge); without the vault
password it is refused before any host is touched.  The CLI reads and changes the tier through it: status,
health-check, metrics, a canary weight moved and rolled back, its history
kept beside the inventory.

Then an operator's whole change sequence, under a steady load through both
load balancers of edge-1: scale-up 1; a progressive canary of a healthy
release, steps 10 -> 25 -> 100, killed (SIGKILL) during the 25% step,
`canary-status` telling the truth, `--resume` finishing and promoting, and
at every step the share each load balancer sent to the canary matching the
weight; rollback (the instances back to what they ran); scale-down 1.
WebSockets held open through NGINX meanwhile end, when their instance is
replaced, with a clean close (1001, going away).  No request fails for a
client that resends an idempotent request whose keep-alive connection
closed before any answer (RFC 9110, 9.2.2), and afterwards the nodes run
exactly what the inventory says (short form: the roles' render; make
test-long: a converge through it, changed=0).

Intervals are short (15 s): the analysis runs every 5 s, the lab's scrape
period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from haproxy_lab import wait_until_settled
from labkit import (PLAYBOOK, ClientIPs, WebSocketWatch, backends_put_back, canary_class_loads, disagreements_with_the_inventory,
                    node, rollout_step_windows, wait_until)
from test_cli_status import CLI, HAPROXY_BACKENDS, cli

from automata_lb import canary, targets
from lab import stack
from tests.kit import ansible_playbook

pytestmark = pytest.mark.usefixtures("trusted_gateway")

REHEARSAL, VAULT_PASS = stack.REHEARSAL_DIR, stack.REHEARSAL_VAULT_PASS
THROUGH_IT = ("--inventory", str(REHEARSAL), "--vault-password-file", str(VAULT_PASS))
INTERVAL = 15
# One canary instance beside four stable ones (after the scale-up): at 25%
# it takes about what each stable instance takes, so the latency check
# compares like with like on a busy two-core machine.
STEPS = [10, 25, 100]
MIDDLE = STEPS[1]
# Binomial spread of the measured share over a step's few hundred requests is
# 2-3 points; 10 points is over three standard deviations.
SHARE_TOLERANCE = 10


def _status() -> dict:
    proc = cli(*THROUGH_IT, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _weights(status: dict) -> set[int]:
    return {e[lb]["canary_share"] for e in status["edges"] for lb in ("nginx", "haproxy")}


def test_the_nodes_are_reached_as_a_user_who_is_not_root(monkeypatch):
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(VAULT_PASS))
    for edge_node in targets.inventory(REHEARSAL).edges:
        assert (edge_node.user, edge_node.become) == ("deploy", True)
        plain = dataclasses.replace(edge_node, become=False)
        assert plain.run("id", "-un").stdout.strip() == "deploy"
        assert edge_node.run("id", "-un").stdout.strip() == "root"   # through sudo, as Ansible's become
        assert edge_node.run("true | id -un").stdout.strip() == "root"  # a whole pipeline, not its first command


def test_without_the_vault_password_nothing_runs():
    run = ansible_playbook(PLAYBOOK, REHEARSAL, env={"ANSIBLE_VAULT_PASSWORD_FILE": ""})
    assert run.rc != 0
    assert "vault" in run.output.lower(), run.output[-2000:]
    assert not any(s.get("changed") for s in run.stats.values())


def test_status_health_check_and_metrics_read_the_tier_through_it():
    status = _status()
    assert {e["node"] for e in status["edges"]} == {"edge-1", "edge-2"}
    assert all(e["reachable"] and e["nginx"]["active"] and e["haproxy"]["active"] for e in status["edges"]), status
    assert status["prometheus"] == "http://127.0.0.1:9090"
    assert {s["state"] for s in status["servers"]} == {"UP"}
    health = cli(*THROUGH_IT, "health-check")
    assert health.returncode == 0, health.stdout + health.stderr
    metrics = cli(*THROUGH_IT, "metrics", "--json")   # from the Prometheus the inventory names
    assert metrics.returncode == 0, metrics.stdout + metrics.stderr


def test_a_canary_weight_moves_through_it_and_rolls_back():
    before = _weights(_status())
    assert len(before) == 1
    (share,) = before
    moved = cli(*THROUGH_IT, "canary-deploy", "canary", "--weight", str(share + 10), "--yes")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert _weights(_status()) == {share + 10}
    back = cli(*THROUGH_IT, "rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _weights(_status()) == {share}
    # Kept beside the inventory, for every operator of it.
    history = (REHEARSAL / ".automata-lb" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["command"] for line in history][-2:] == ["canary-deploy", "rollback"]


# --- an operator's change sequence, under load --------------------------------------

@pytest.fixture(scope="module")
def vault_password():
    """The vault password for what the tests themselves read through the inventory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(VAULT_PASS))
        yield


@contextmanager
def restored(lab: dict) -> Iterator[targets.Target]:
    for e in lab["edges"]:
        wait_until_settled(node(e["name"]), HAPROXY_BACKENDS)
    with backends_put_back(targets.inventory(REHEARSAL),
                           lambda: cli(*THROUGH_IT, "canary-abort", "--yes", timeout=300)) as target:
        yield target


def _rollout() -> canary.Rollout | None:
    return canary.load(str(REHEARSAL))


def _settled_status(timeout: float = 60) -> dict:
    """`status --json` once every server is UP on every node (right after a
    change, a reloaded HAProxy's checks are still rising), else the last seen."""
    seen: dict = {}

    def settled() -> bool:
        seen.update(_status())
        return {s["state"] for s in seen["servers"]} == {"UP"}

    with contextlib.suppress(AssertionError):
        wait_until(settled, timeout, interval=1, what="every server UP")
    return seen


def _serving(edge: dict) -> set[tuple[str, str]]:
    """(instance, release) of what answers canary-class requests through
    HAProxy (at weight 0: the stable instances only)."""
    ips = ClientIPs()
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=10) as client:
        answers = [client.get("/api/where", headers={"x-forwarded-for": ips.take()}) for _ in range(40)]
    return {(r.headers["x-backend-instance"], r.headers["x-backend-version"]) for r in answers}


@pytest.fixture(scope="module")
def rehearsed(lab, edge, ca_cert, long_form, vault_password):
    loads = canary_class_loads(edge, ca_cert, max_seconds=900)
    done: dict = {}
    sockets = WebSocketWatch(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), max_seconds=900)
    with restored(lab) as target, loads["nginx"], loads["haproxy"], sockets:
        done["before"] = _status()
        done["scale-up at"] = time.time()
        done["scale-up"] = cli(*THROUGH_IT, "scale-up", "1", "--yes", timeout=300)
        done["scale-up took"] = time.time() - done["scale-up at"]
        done["scaled up"] = _settled_status()
        first = subprocess.Popen([CLI, *THROUGH_IT, "canary-deploy", "v2", "--steps", ",".join(map(str, STEPS)),
                                  "--interval", f"{INTERVAL}s", "--yes"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: ((r := _rollout()) and r.phase == "stepping" and r.weight == MIDDLE)
                   or first.poll() is not None, 300)
        first.kill()  # SIGKILL: no handler runs, the record stays as the last transition wrote it
        done["killed"] = first.communicate(timeout=10)[0]
        status = cli(*THROUGH_IT, "canary-status", "--json")
        done["canary-status"] = (status.returncode, json.loads(status.stdout))
        done["resume"] = cli(*THROUGH_IT, "canary-deploy", "--resume", "--yes", timeout=400)
        done["rollout"] = _rollout()
        done["serving promoted"] = _serving(edge)
        done["rollback"] = cli(*THROUGH_IT, "rollback", "--yes", timeout=400)
        done["serving rolled back"] = _serving(edge)
        done["scale-down"] = cli(*THROUGH_IT, "scale-down", "1", "--yes", timeout=300)
        done["after"] = _status()
        # Changed between converges: the inventory must say what the nodes run.
        done["disagreements"] = disagreements_with_the_inventory(
            long_form, target, args=["--vault-password-file", str(VAULT_PASS)])
    done["history"] = [json.loads(line)["command"] for line in
                       (REHEARSAL / ".automata-lb" / "history.jsonl").read_text().splitlines()]
    done |= {lb: load.report for lb, load in loads.items()} | {"sockets": sockets}
    return done


def _ok(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 0


def test_scale_up_through_it_starts_an_instance_both_load_balancers_serve(rehearsed):
    assert _ok(rehearsed["scale-up"]), rehearsed["scale-up"].stdout + rehearsed["scale-up"].stderr
    # How soon each load balancer sent the new instance a request (a figure, not a bound).
    first = {lb: min((o.at for o in rehearsed[lb].outcomes if o.instance == "backend-4"), default=None)
             for lb in ("nginx", "haproxy")}
    assert None not in first.values(), first
    print(f"scale-up 1 took {rehearsed['scale-up took']:.1f}s; backend-4's first answer "
          + ", ".join(f"through {lb} {at - rehearsed['scale-up at']:.1f}s" for lb, at in first.items())
          + " after the command")
    servers = {s["server"]: s["state"] for s in rehearsed["scaled up"]["servers"]}
    assert servers == {s["server"]: "UP" for s in rehearsed["before"]["servers"]} | {"backend-4": "UP"}, servers


def test_an_interrupted_rollout_is_explained_by_canary_status(rehearsed):
    rc, doc = rehearsed["canary-status"]
    assert rc == 0
    assert doc["running_pid"] is None
    assert f"interrupted while stepping at step 2 of 3 ({MIDDLE}%)" in doc["summary"], doc["summary"]
    # The truth from the nodes: every load balancer of every node still sends the middle step's weight.
    weights = {(n, lb): w for n, per_lb in doc["weights"].items() for lb, w in per_lb.items()}
    assert len(weights) == 4 and set(weights.values()) == {MIDDLE}, weights


def test_resume_finishes_the_rollout_and_promotes(rehearsed):
    resumed, rollout = rehearsed["resume"], rehearsed["rollout"]
    assert _ok(resumed), resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert rollout.phase == "promoted" and rollout.weight == 0
    assert [e["weight"] for e in rollout.events if e["what"] == "passed"][-2:] == [MIDDLE, 100]
    # Every stable instance answers as v2 now, the one scale-up started too, and the canary takes nothing.
    assert rehearsed["serving promoted"] == {(f"backend-{n}", "v2") for n in range(1, 5)}


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_each_step_sends_its_weight_to_the_canary(rehearsed, lb):
    report = rehearsed[lb]
    measured = []
    for weight, start, end in rollout_step_windows(rehearsed["rollout"]):
        served = [o for o in report.between(start, end) if o.instance]
        if len(served) < 100:
            continue
        share = 100 * sum(o.instance == "canary-1" for o in served) / len(served)
        measured.append((weight, round(share, 1), len(served)))
    print(f"{lb}: (weight, measured canary share %, requests) {measured}")
    assert {w for w, _, _ in measured} >= set(STEPS), measured
    assert all(abs(share - weight) <= SHARE_TOLERANCE for weight, share, _ in measured), measured


def test_rollback_puts_back_what_every_instance_ran_and_scale_down_what_ran(rehearsed):
    assert _ok(rehearsed["rollback"]), rehearsed["rollback"].stdout + rehearsed["rollback"].stderr
    assert rehearsed["serving rolled back"] == {(f"backend-{n}", "stable") for n in range(1, 5)}
    assert _ok(rehearsed["scale-down"]), rehearsed["scale-down"].stdout + rehearsed["scale-down"].stderr
    assert [s["server"] for s in rehearsed["after"]["servers"]] == [s["server"] for s in rehearsed["before"]["servers"]]
    assert rehearsed["history"][-4:] == ["scale-up", "canary-deploy", "rollback", "scale-down"]


def test_no_request_failed_through_the_whole_sequence(rehearsed):
    for lb in ("nginx", "haproxy"):
        report = rehearsed[lb]
        assert report.requests > 500, lb
        assert report.failures == [], (lb, report.failures[:5])


def test_websockets_on_replaced_instances_closed_cleanly(rehearsed):
    # Promotion and rollback replace every stable instance: each WebSocket
    # through NGINX ends at least once, with 1001 (going away).
    sockets = rehearsed["sockets"]
    assert sockets.echoes > 0
    assert sockets.ended and all(code == 1001 for _, code in sockets.ended), sockets.ended


def test_the_inventory_and_the_nodes_agree_afterwards(rehearsed):
    assert rehearsed["disagreements"] == []
