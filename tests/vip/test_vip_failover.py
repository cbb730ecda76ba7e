"""The failover experiment: two edge nodes converged with playbooks/edge.yml,
one floating address, and what happens to it when a load balancer, a node or
the network between the nodes fails (docs/edge-ha.md has the numbers).

Opt-in (~5 min, needs Podman and the lab's images; never the shared lab):
    AUTOMATA_VIP_LAB=1 .venv/bin/pytest tests/vip/test_vip_failover.py -s
The tests run in file order on one pair of nodes, each starting from the
state the previous one left.  AUTOMATA_VIP_KEEP=1 leaves the pair running
for the next run (which then skips building it); AUTOMATA_VIP_PREFIX and
AUTOMATA_VIP_SUBNET choose its names and network.  What was measured is printed and written to
reports/vip-failover.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import yaml

if os.environ.get("AUTOMATA_VIP_LAB") != "1":
    pytest.skip("the failover experiment is opt-in: AUTOMATA_VIP_LAB=1", allow_module_level=True)

from vipkit import ROOT
from viplab import EDGES, PREFIX, VipLab, container, now, podman, prober, sh, wait_until

MEASURED: dict[str, float | str] = {}
# Health check: interval 1 s, fall 2 (role defaults); advertisements every 1 s.
MOVE_WITHIN = 10.0
# Probes answered in a row that mean "clients are served" (the prober sends
# one every 50 ms: about a second).
STEADY = 20
VIP_DEFAULTS = yaml.safe_load((ROOT / "roles/edge_vip/defaults/main.yml").read_text())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):

    keep = os.environ.get("AUTOMATA_VIP_KEEP") == "1"
    # Kept pairs keep their SSH key where the next run finds it.
    state = Path(tempfile.gettempdir()) / f"{PREFIX}-viplab" if keep else tmp_path_factory.mktemp("viplab")
    state.mkdir(exist_ok=True)
    vip_lab = VipLab(state)
    try:
        vip_lab.up(reuse=keep)
        yield vip_lab
    finally:
        report = ROOT / "reports" / "vip-failover.json"
        report.parent.mkdir(exist_ok=True)
        report.write_text(json.dumps(MEASURED, indent=2) + "\n")
        print("\nmeasured:", json.dumps(MEASURED, indent=2))
        if not keep:
            vip_lab.down()


def _record(name: str, value: float | str) -> None:
    MEASURED[name] = round(value, 3) if isinstance(value, float) else value


def _monitor(pair) -> None:
    for node in pair.nodes.values():
        node.start_address_monitor()


def _first(pair, node: str, kind: str, after: float) -> float:
    """Seconds from `after` to the node's first `kind` event of the address."""
    return pair.nodes[node].first_event(kind, after, MOVE_WITHIN)


def _failover(pair, stop: str, port: int, path: str, label: str) -> str:
    """Stop a load balancer on the holder; measure the move; return the new holder."""

    old = pair.master()
    new = pair.other(old)
    _monitor(pair)
    with prober(port, path) as probe:
        probe.wait_served(STEADY)  # the address answers before anything changes
        t0 = now()
        sh(old, f"systemctl stop {stop}")
        wait_until(lambda: pair.holders() == [new], MOVE_WITHIN, what=f"the address on {new} alone")
        probe.wait_served(STEADY, since=t0)  # clients served again: the outage is over
    _record(f"{label}_released_s", _first(pair, old, "deleted", t0))
    _record(f"{label}_taken_over_s", _first(pair, new, "added", t0))
    _record(f"{label}_client_outage_s", probe.outage_after(t0))
    # keepalived is bound to both load balancers' units: a stopped one takes
    # it down (STOP), before the health check would have failed (FAULT).
    assert wait_until(lambda: pair.nodes[old].state().get("state") == "STOP", 5, what="STOP state file")
    assert wait_until(lambda: pair.nodes[new].state().get("state") == "MASTER", 5, what="MASTER state file")
    return new


def test_converge_then_second_converge_changes_nothing(pair):
    started = time.monotonic()
    first = pair.converge()
    _record("first_converge_s", time.monotonic() - started)
    assert first.rc == 0, first.failed or first.output[-3000:]
    second = pair.converge()
    assert second.rc == 0 and second.changed == 0, second.changed_tasks


def test_exactly_one_node_holds_the_address(pair):

    master = pair.master()
    backup = pair.other(master)
    _record("first_master", master)
    assert pair.nodes[master].state()["state"] == "MASTER"
    assert pair.nodes[backup].state()["state"] == "BACKUP"
    metrics = sh(master, "cat /var/lib/prometheus/node-exporter/edge_vip.prom")
    assert 'edge_vip_state{vrrp_instance="edge_vip",state="MASTER"} 1' in metrics


def test_nginx_failure_moves_the_address(pair):

    old = pair.master()
    new = _failover(pair, "nginx", 80, "/health", "nginx_down")
    journal = sh(old, "journalctl -t edge-vip --no-pager -o cat")
    assert "edge_vip is now STOP" in journal, journal
    assert new != old


def test_recovered_node_does_not_take_the_address_back(pair):
    # nopreempt: the healthy node keeps the address, the recovered one waits.

    holder = pair.master()
    recovered = pair.other(holder)
    sh(recovered, "systemctl start nginx")
    wait_until(lambda: pair.nodes[recovered].state().get("state") == "BACKUP", 15, what="BACKUP after recovery")
    # nopreempt: the recovered node does not take the address back.  Nothing
    # to poll for (the test is that nothing happens): time is the input, a
    # few advertisement intervals, in which a preempting node would move it.
    time.sleep(5 * VIP_DEFAULTS["edge_vip_advert_int"])
    assert pair.holders() == [holder]


def test_haproxy_failure_moves_the_address(pair):

    old = pair.master()
    _failover(pair, "haproxy", 8000, "/lb-health", "haproxy_down")
    sh(old, "systemctl start haproxy")


def test_reload_keeps_the_address(pair):
    # A converge that changes keepalived.conf reloads it (the role's
    # handler); so do reloads by hand.  The holder never lets go.

    holder = pair.master()
    backup = pair.other(holder)
    wait_until(lambda: pair.nodes[backup].state().get("state") == "BACKUP", 15, what="both nodes healthy")
    _monitor(pair)
    with prober(80, "/health") as probe:
        t0 = now()
        changed = pair.converge({"edge_vip_check_rise": 4})
        assert changed.rc == 0, changed.failed or changed.output[-3000:]
        assert any("keepalived" in t for t in changed.changed_tasks.get(holder, [])), changed.changed_tasks
        for _ in range(3):
            sh(holder, "systemctl reload keepalived")
            # Pacing: one advertisement interval between reloads, so the
            # peer hears the holder between them (time is the input).
            time.sleep(VIP_DEFAULTS["edge_vip_advert_int"])
    assert [k for _, k in pair.nodes[holder].address_events()] == []
    assert pair.holders() == [holder] and pair.nodes[holder].state()["state"] == "MASTER"
    _record("reload_client_outage_s", probe.outage_after(t0))
    assert probe.outage_after(t0) == 0.0


def test_restart_moves_the_address_reload_does_not(pair):
    # Why the handler reloads: a restart releases the address (priority 0 on
    # the way out), the other node takes it, and nopreempt keeps it there.

    holder = pair.master()
    other = pair.other(holder)
    with prober(80, "/health") as probe:
        probe.wait_served(STEADY)  # the address answers before anything changes
        t0 = now()
        sh(holder, "systemctl restart keepalived")
        wait_until(lambda: pair.holders() == [other], MOVE_WITHIN, what="the address on the other node")
        probe.wait_served(STEADY, since=t0)  # clients served again: the outage is over
    _record("restart_client_outage_s", probe.outage_after(t0))


def test_silent_master_is_replaced_and_the_higher_priority_wins_back(pair):
    # A frozen node (paused container: a hung kernel, a cut cable) sends no
    # advertisements; the backup takes over after 3 x advert_int + skew.
    # When the frozen node wakes up it still believes it is master: for a
    # moment both hold the address, then the lower priority yields, even
    # with nopreempt (which only stops a backup from taking over): the
    # higher priority of the two ends up with it.

    frozen = pair.master()
    other = pair.other(frozen)
    _monitor(pair)
    with prober(80, "/health") as probe:
        probe.wait_served(STEADY)  # the address answers before anything changes
        t0 = now()
        podman("pause", container(frozen))
        try:
            # A paused container takes no `podman exec`: only the other is asked.
            wait_until(pair.nodes[other].holds_vip, MOVE_WITHIN, what=f"the address on {other}")
            _record("frozen_master_taken_over_s", _first(pair, other, "added", t0))
            probe.wait_served(STEADY, since=t0)
            _record("frozen_master_client_outage_s", probe.outage_after(t0))
        finally:
            t1 = now()
            podman("unpause", container(frozen))
        final = pair.master()
        _record("frozen_master_after_wake_settled_s", now() - t1)
        _record("frozen_master_after_wake_holder", "the woken node" if final == frozen else "the other node")
        priorities = {name: int(node.state()["priority"]) for name, node in pair.nodes.items()}
        assert final == max(priorities, key=priorities.get), priorities
        probe.wait_served(STEADY, since=t1)
    _record("frozen_master_after_wake_client_outage_s", probe.outage_after(t1))


def _partition(pair, heal: bool = False) -> None:
    """Cut (or heal) the path between the nodes only: each one's neighbour
    entry for the other points at a MAC nobody has, so VRRP advertisements
    (and nothing else the test uses) stop arriving."""
    for name in EDGES:
        (peer,) = [a for n, a in EDGES.items() if n != name]
        if heal:
            sh(name, f"ip neigh del {peer} dev eth0", check=False)
        else:
            sh(name, f"ip neigh replace {peer} lladdr 02:00:5e:00:00:fe dev eth0 nud permanent")


def test_partition_both_nodes_claim_the_address_until_healed(pair):
    # The nodes cannot hear each other: each becomes master and holds the
    # address; clients reach whichever answered ARP last.  Healing settles it
    # on the higher priority (docs/edge-ha.md, split brain).

    with prober(80, "/health") as probe:
        probe.wait_served(STEADY)  # the address answers before anything changes
        t0 = now()
        _partition(pair)
        try:
            wait_until(lambda: len(pair.holders()) == 2, MOVE_WITHIN, what="both nodes holding the address")
            _record("partition_both_hold_after_s", now() - t0)
            probe.wait_served(STEADY, since=t0)
            _record("partition_client_outage_s", probe.outage_after(t0))
        finally:
            t1 = now()
            _partition(pair, heal=True)
        pair.master()
        _record("partition_healed_settled_s", now() - t1)
        probe.wait_served(STEADY, since=t1)
    _record("partition_healed_client_outage_s", probe.outage_after(t1))
