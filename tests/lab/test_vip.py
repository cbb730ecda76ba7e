"""The lab's floating address (roles/edge_vip, docs/edge-ha.md): one node
holds it, and when that node's HAProxy, its NGINX or the whole node goes
away, the other node takes it while clients keep calling it.

Two kinds of client call the address from this machine during every
failure:
- a prober with a short timeout, one new connection every 50 ms: how long
  the address is dark (the outage);
- patient clients, as browsers and HTTP libraries are: a new connection per
  request, a 10 s timeout, every failure recorded with its time and error.

What each failure costs them differs, and each test states its bound:
- a load balancer stopped (or dead: its unit stops with it): keepalived is
  bound to it and leaves first, so only requests open on the node when the
  address leaves it may fail;
- a hung load balancer: the health check needs `fall` checks to see it, and
  requests that reach it meanwhile fail; none after the move;
- a dead node: silence until the other node's master-down timer fires;
  meanwhile new connections fail fast (measured: "Connection refused");
  none after the move.

The tests stop and start load balancers and a node: they run last in the
lab suite (file order), and each one leaves both nodes healthy.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from lab import podman as lab_podman
from lab import vip as lab_vip
from labkit import wait_until

# The role's defaults (roles/edge_vip/defaults/main.yml): advertisements
# every 1 s, a silent master replaced after 3 of them plus a skew; the
# health check fails after 2 checks 1 s apart, and rises after 3.
ADVERT_INT, CHECK_INTERVAL, CHECK_FALL, CHECK_RISE = 1, 1, 2, 3
SILENT_MASTER_S = 3 * ADVERT_INT + 1
# How long a move may take: the slower of the two detections, plus the
# gratuitous ARP and a busy machine's scheduling.
MOVE_WITHIN = SILENT_MASTER_S + 6
# A node that rises again becomes BACKUP after `rise` good checks; booting
# a stopped node first starts systemd and both load balancers.
BACK_WITHIN = 90
# The new holder's gratuitous ARP reaches this machine within this.
ARP_SETTLE = 1.0
LBS = {"nginx": (80, "/health"), "haproxy": (8000, "/lb-health")}


@dataclass
class PatientClients:
    """`workers` clients calling the address in a loop, each request on a new
    connection with a 10 s timeout; a failure records when it started and
    ended, and `open_during(a, b)` counts the requests open in a span of time."""

    vip: str
    port: int
    path: str
    workers: int = 3
    requests: int = 0
    # (started, ended, "" or what went wrong: an HTTP status or the error)
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _once(self) -> str:
        conn = http.client.HTTPConnection(self.vip, self.port, timeout=10)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            status = conn.getresponse().status
            return "" if status == 200 else f"HTTP {status}"
        except OSError as exc:
            return type(exc).__name__ if not exc.strerror else exc.strerror
        finally:
            conn.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            error = self._once()
            with self._lock:
                self.requests += 1
                self.spans.append((started, time.time(), error))
            self._stop.wait(0.05)

    def __enter__(self) -> PatientClients:
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def failed(self) -> list[tuple[float, float, str]]:
        return [s for s in self.spans if s[2]]

    def open_during(self, start: float, end: float) -> int:
        """Requests open at some moment between `start` and `end`."""
        return sum(1 for started, ended, _ in self.spans if started < end and ended > start)


@pytest.fixture(scope="module")
def vip_address(lab) -> str:
    return lab["vip"]["address"]


@pytest.fixture(scope="module")
def nodes(lab, vip_address) -> dict[str, lab_vip.Node]:
    return {e["name"]: lab_vip.Node(e["name"], e["container"], vip_address) for e in lab["edges"]}


def _holders(nodes) -> list[str]:
    return [name for name, node in nodes.items() if node.holds_vip()]


def _settled(nodes) -> str:
    """Wait until exactly one node holds the address and the other is a
    healthy BACKUP; return the holder."""
    holder: list[str] = []

    def check() -> bool:
        holders = _holders(nodes)
        if len(holders) != 1:
            return False
        states = {name: node.state().get("state") for name, node in nodes.items()}
        others = [s for name, s in states.items() if name != holders[0]]
        holder[:] = holders
        return states[holders[0]] == "MASTER" and others == ["BACKUP"]
    wait_until(check, BACK_WITHIN, interval=0.1, what="one MASTER holding the address and one BACKUP")
    return holder[0]


@pytest.fixture
def holder(nodes) -> str:
    holder = _settled(nodes)
    yield holder
    # Whatever the test did, both nodes end healthy.
    for node in nodes.values():
        lab_podman.podman("start", node.container)  # a no-op for a running node
        wait_until(lambda n=node: n.sh("systemctl is-system-running", check=False).strip() in ("running", "degraded"),
              BACK_WITHIN, what=f"{node.name} booted")
        node.sh("pkill -CONT -x nginx; systemctl start nginx haproxy keepalived", check=False)
    _settled(nodes)


def _other(nodes, name: str) -> str:
    (other,) = [n for n in nodes if n != name]
    return other


def _report(name: str, **values) -> None:
    """What was measured, printed for the record (docs/edge-ha.md has the runs)."""
    print(f"\n{name}: {json.dumps(values)}")


def test_one_node_holds_the_address_and_publishes_it(nodes, vip_address, lab, ca_cert):
    holder = _settled(nodes)
    metrics = nodes[holder].sh("cat /var/lib/prometheus/node-exporter/edge_vip.prom")
    assert 'edge_vip_state{vrrp_instance="edge_vip",state="MASTER"} 1' in metrics
    # Both load balancers answer on the address, TLS included: the lab's
    # certificate names it.
    assert httpx.get(f"http://{vip_address}/health", timeout=5).status_code == 200
    assert httpx.get(f"http://{vip_address}:8000/lb-health", timeout=5).status_code == 200
    r = httpx.get(f"https://{vip_address}/api/whoami", verify=ca_cert, timeout=5)
    assert r.status_code == 200 and r.headers["x-backend-instance"]
    # Prometheus counts exactly one MASTER (what the VRRP alert watches).
    url = lab["prometheus"]["url"]

    def masters():
        result = httpx.get(f"{url}/api/v1/query", params={"query": 'sum(edge_vip_state{state="MASTER"})'},
                           timeout=5).json()["data"]["result"]
        return result and float(result[0]["value"][1]) == 1
    wait_until(masters, 30, interval=0.1, what="Prometheus seeing one MASTER")


@pytest.mark.parametrize("stopped", ["haproxy", "nginx"])
def test_a_stopped_load_balancer_hands_the_address_over(nodes, holder, vip_address, stopped):
    other = _other(nodes, holder)
    for node in nodes.values():
        node.start_address_monitor()
    probers = {lb: lab_vip.Prober(vip_address, port, path) for lb, (port, path) in LBS.items()}
    patient = {lb: PatientClients(vip_address, port, path) for lb, (port, path) in LBS.items()}
    for client in [*probers.values(), *patient.values()]:
        client.__enter__()
    try:
        wait_until(lambda: all(p.outcomes for p in probers.values()), 10, interval=0.1, what="first probes answered")
        t0 = time.time()
        nodes[holder].sh(f"systemctl stop {stopped}")
        wait_until(lambda: _holders(nodes) == [other], MOVE_WITHIN, interval=0.1, what=f"the address on {other} alone")
        taken_over = nodes[other].first_event("added", t0, MOVE_WITHIN)
        # Clients that started during the move finish within their timeout.
        wait_until(lambda: all(p.outcomes and p.outcomes[-1][0] > t0 + taken_over + 1 for p in probers.values()),
              15, interval=0.1, what="probes after the move")
    finally:
        for client in [*probers.values(), *patient.values()]:
            client.__exit__(None, None, None)

    # systemd stopped keepalived before the load balancer (BindsTo): the
    # node left VRRP (STOP) instead of failing its health check (FAULT).
    wait_until(lambda: nodes[holder].state().get("state") == "STOP", 5, interval=0.1, what=f"{holder} STOP")
    released = nodes[holder].first_event("deleted", t0, 1)
    assert taken_over <= 3 * ADVERT_INT, f"took over after {taken_over:.2f}s"
    measured = {"released_s": round(released, 2), "taken_over_s": round(taken_over, 2)}
    # The address leaves the node at t0 + released.  A connection the node
    # accepted before that is lost with it: the node can no longer answer
    # from the address, and the client, waiting for its response, sends
    # nothing that would meet the new holder's reset (seen: a timeout).
    left = t0 + released
    for lb in LBS:
        failed = patient[lb].failed()
        in_flight = patient[lb].open_during(t0, left)
        measured[lb] = {"outage_s": round(probers[lb].outage_after(t0), 2),
                        "patient_requests": patient[lb].requests, "patient_failed": len(failed),
                        "open_on_the_failing_node": in_flight}
        # Only a request already open on the failing node may fail.
        assert len(failed) <= in_flight, (lb, failed, in_flight)
        assert all(started <= left for started, *_ in failed), (lb, failed, left)
    _report(f"{stopped}_stopped", **measured)

    _comes_back_without_taking_over(nodes, holder, other, vip_address,
                                    lambda: nodes[holder].sh(f"systemctl start {stopped}"))


def _comes_back_without_taking_over(nodes, back: str, holder: str, vip_address: str, bring_back) -> None:
    """`back` returns as BACKUP and, without preemption, leaves the address
    with `holder`; clients of the address see nothing of it."""
    with lab_vip.Prober(vip_address, *LBS["nginx"]) as probe:
        t1 = time.time()
        bring_back()
        wait_until(lambda: nodes[back].state().get("state") == "BACKUP", BACK_WITHIN, interval=0.1, what=f"{back} BACKUP again")
        # Time is the input: a preempting node takes over within one
        # advertisement of becoming BACKUP; three show this one does not.
        time.sleep(3 * ADVERT_INT)
    assert _holders(nodes) == [holder]
    assert probe.failures_after(t1) == 0


def _fail_the_holder(nodes, holder: str, vip_address: str, fail):
    """Call the address through NGINX with a prober and patient clients,
    `fail()` the holder, and wait until the other node holds the address and
    every client has started a request after the move.  Returns the prober,
    the patient clients, the failure's time and the seconds to the takeover."""
    other = _other(nodes, holder)
    nodes[other].start_address_monitor()
    patient = PatientClients(vip_address, *LBS["nginx"])
    with lab_vip.Prober(vip_address, *LBS["nginx"]) as probe, patient:
        wait_until(lambda: probe.outcomes and patient.spans, 10, interval=0.1, what="first answers")
        t0 = time.time()
        fail()
        # Only the other node is asked: a killed node takes no `podman exec`.
        wait_until(nodes[other].holds_vip, MOVE_WITHIN, interval=0.1, what=f"the address on {other}")
        taken_over = nodes[other].first_event("added", t0, MOVE_WITHIN)
        wait_until(lambda: probe.outcomes[-1][0] > t0 + taken_over + 1, 15, interval=0.1, what="probes after the move")
        # The patient clients' longest wait: a SYN resent after 1, 3, 7 s.
        wait_until(lambda: min(s[0] for s in patient.spans[-patient.workers:]) > t0 + taken_over, 15,
                   interval=0.1, what="every patient client past the move")
    return probe, patient, t0, taken_over


def test_a_hung_load_balancer_is_caught_by_the_health_check(nodes, holder, vip_address):
    # A frozen NGINX still has its unit active and its socket open (the
    # kernel completes handshakes into the backlog): only the health check
    # sees it, after `fall` checks.  Requests that reach it meanwhile hang;
    # none started after the move fails.
    other = _other(nodes, holder)
    probe, patient, t0, taken_over = _fail_the_holder(nodes, holder, vip_address,
                                                      lambda: nodes[holder].sh("pkill -STOP -x nginx"))
    failed = patient.failed()
    _report("nginx_hung", taken_over_s=round(taken_over, 2), outage_s=round(probe.outage_after(t0), 2),
            patient_requests=patient.requests, patient_failed=len(failed),
            in_flight_at_failure=patient.open_during(t0, t0))
    assert nodes[holder].state()["state"] == "FAULT" and not nodes[holder].holds_vip()
    assert taken_over <= CHECK_INTERVAL * (CHECK_FALL + 1) + 2 * ADVERT_INT
    assert all(started < t0 + taken_over for started, *_ in failed), failed

    _comes_back_without_taking_over(nodes, holder, other, vip_address,
                                    lambda: nodes[holder].sh("pkill -CONT -x nginx"))


def test_a_dead_node_is_replaced_and_comes_back_as_backup(nodes, holder, vip_address, lab):
    # SIGKILL to the node's init: no goodbye advertisement, the other node
    # notices the silence after 3 advertisements plus a skew.
    other = _other(nodes, holder)
    probe, patient, t0, taken_over = _fail_the_holder(
        nodes, holder, vip_address, lambda: lab_podman.podman("kill", "--signal", "KILL", nodes[holder].container))
    failed = patient.failed()
    _report("node_killed", taken_over_s=round(taken_over, 2), outage_s=round(probe.outage_after(t0), 2),
            patient_requests=patient.requests, patient_failed=len(failed),
            in_flight_at_failure=patient.open_during(t0, t0), errors=sorted({e for *_, e in failed}))
    assert taken_over <= MOVE_WITHIN
    # Nobody holds the address until the other node's master-down timer
    # fires: new connections fail at once meanwhile (measured: refused),
    # rather than waiting for the move.  None fails after it.
    assert all(started < t0 + taken_over + ARP_SETTLE for started, *_ in failed), failed

    def boot():
        lab_podman.podman("start", nodes[holder].container)
        wait_until(lambda: nodes[holder].sh("systemctl is-active nginx haproxy keepalived", check=False)
              .split() == ["active"] * 3, BACK_WITHIN, what=f"{holder} booted")
    _comes_back_without_taking_over(nodes, holder, other, vip_address, boot)


def _partition(nodes, heal: bool = False) -> None:
    """Cut (or heal) the path between the nodes only: each one's neighbour
    entry for the other points at a MAC nobody has, so VRRP advertisements
    (and nothing a client sends) stop arriving."""
    addresses = {name: node.sh("ip -4 -o addr show dev eth0 scope global primary").split()[3].split("/")[0]
                 for name, node in nodes.items()}
    for name, node in nodes.items():
        (peer,) = [a for n, a in addresses.items() if n != name]
        if heal:
            node.sh(f"ip neigh del {peer} dev eth0", check=False)
        else:
            node.sh(f"ip neigh replace {peer} lladdr 02:00:5e:00:00:fe dev eth0 nud permanent")


def test_split_nodes_both_claim_the_address_and_settle_when_healed(nodes, holder, vip_address):
    # No fencing (docs/edge-ha.md): while split, both serve; when the path
    # heals, the lower priority yields.
    other = _other(nodes, holder)
    for node in nodes.values():
        node.start_address_monitor()
    patient = PatientClients(vip_address, *LBS["nginx"])
    with patient:
        wait_until(lambda: patient.spans, 10, interval=0.1, what="first answers")
        t0 = time.time()
        _partition(nodes)
        try:
            wait_until(lambda: len(_holders(nodes)) == 2, MOVE_WITHIN, interval=0.1, what="both nodes holding the address")
            both_after = time.time() - t0
        finally:
            t1 = time.time()
            _partition(nodes, heal=True)
        settled_on = _settled(nodes)
        settled_after = time.time() - t1
    priorities = {name: int(node.state()["priority"]) for name, node in nodes.items()}
    failed = patient.failed()
    _report("split", both_hold_after_s=round(both_after, 2), settled_after_heal_s=round(settled_after, 2),
            holder=settled_on, patient_requests=patient.requests, patient_failed=len(failed))
    assert settled_on == max(priorities, key=priorities.get)
    # This machine's traffic moves twice: to the node that claims the
    # address in the split (its gratuitous ARP), and away from the node that
    # yields it at the heal.  A request open on a node as the traffic leaves
    # it is lost with its connection; no other request may fail.
    moves = [t0 + nodes[other].first_event("added", t0, MOVE_WITHIN),
             t1 + nodes[_other(nodes, settled_on)].first_event("deleted", t1, BACK_WITHIN)]
    assert all(any(started <= move + ARP_SETTLE and ended >= move for move in moves)
               for started, ended, _ in failed), (failed, moves)
