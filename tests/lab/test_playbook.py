"""playbooks/edge.yml as a whole on the lab, in one pair of converges.

The first converge carries a change to edge-1 while both of its load
balancers serve traffic and WebSockets, and finds what was changed by hand
on edge-2.  On edge-1 the change reaches NGINX and HAProxy by reloads,
never restarts, and no request or WebSocket is lost; it touches what each
load balancer renders from the traffic policy and from its own variables
at once: the api class's response timeout (2 s) and its rate (10 -> 20 per
second, burst 20 -> 40), the canary share (10 -> 20), and a denied network
on NGINX.  Each is observable afterwards, which proves the reload took
effect.  On edge-2 a file of each role edited, loosened or removed by hand
is found (the roles read each node's files, packages and units in one
round trip per role and skip what already matches, rolekit/node_state.py)
and written again; a package removed by hand is installed again, in the
playbook's one apt transaction for every role's packages.  The second converge, with the same variables but
through the production-shaped inventory (.lab/rehearsal: Ansible logs in
as a user who is not root and becomes root through sudo, the stats and
VRRP passwords are in Ansible Vault), changes nothing on either node: the
playbook's idempotence, and proof that such an inventory gives the nodes
exactly what the lab's own does.

The change is edge-1's own variables (a host_vars file in both
inventories, the way an operator gives one node other values); when the
module ends the files go and the inventory's own configuration is put
back the way `automata-lb` installs a change (rendered, checked,
reloaded).  Refused input (a wrong type, a value out of range, a bad value
on one host of two) stops the playbook before any host is touched:
tests/roles/test_refusals.py, offline.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from haproxy_lab import WebSocketSession, haproxy_load, runtime, wait_for_new_worker_traffic, worker_traffic
from labkit import (INVENTORY, PLAYBOOK, ClientIPs, LoadGenerator, LoadReport, PlaybookRun, ansible_playbook, host_vars,
                    lab_policy, lab_policy_overrides, node, put_back_the_inventorys_configs, tls_context)

from lab import stack
from traffic.model import deep_merge

pytestmark = pytest.mark.usefixtures("trusted_gateway")

EDGE1, EDGE2 = "edge-1", "edge-2"
SENDERS = 20  # concurrent requests of the burst test
POLICY_EDIT = {"classes": {"api": {"timeouts": {"response": "2s"}, "rate": {"per_second": 20, "burst": 40}}},
               "canary": {"share": 20}}
CHANGE = {"traffic_policy_overrides": deep_merge(lab_policy_overrides(), POLICY_EDIT),
          "nginx_lb_deny_cidrs": ["192.0.2.0/24"]}
REHEARSAL, VAULT_PASS = stack.REHEARSAL_DIR, stack.REHEARSAL_VAULT_PASS
# One file of each role on edge-2, and what is done to it by hand.
TAMPERED = {
    "/etc/nginx/conf.d/routes.conf": "echo '# edited by hand' >> {path}",
    "/etc/haproxy/haproxy.cfg": "chmod 0644 {path}",
    "/etc/keepalived/edge-vip-notify": "rm {path}",
    "/etc/default/mtail": "echo 'EXTRA_ARGS=--by-hand' >> {path}",
    "/etc/systemd/system/haproxy.service.d/10-automata-nofile.conf": "rm {path}",
}
# A role's package removed by hand on edge-2 (haproxy_lb's socat: nothing
# the lab serves needs it while it is gone).
REMOVED_PACKAGE = "socat"


def _masters(host) -> tuple[str, str]:
    return tuple(host.run(f"systemctl show -p MainPID --value {service}").stdout.strip()
                 for service in ("nginx", "haproxy"))


def _files(host) -> dict[str, tuple[str, int] | None]:
    return {path: (host.file(path).sha256sum, host.file(path).mode) if host.file(path).exists else None
            for path in TAMPERED}


@dataclass
class Converged:
    first: PlaybookRun
    second: PlaybookRun
    nginx: LoadReport
    haproxy: LoadReport
    echoes_after: list[str]
    masters_before: tuple[str, str]
    masters_after: tuple[str, str]
    haproxy_worker_before: int
    haproxy_worker_after: int
    tampered_before: dict
    tampered_after: dict
    package_reinstalled: bool


@pytest.fixture(scope="module")
def converged(converge, edge, ca_cert) -> Converged:
    host, tampered = node(EDGE1), node(EDGE2)
    masters, worker = _masters(host), worker_traffic(host)[0]
    files_before = _files(tampered)
    for path, change in TAMPERED.items():
        tampered.run_test(change.format(path=path))
    tampered.run_test(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y -q {REMOVED_PACKAGE}")
    assert not tampered.package(REMOVED_PACKAGE).is_installed
    haproxy_url = edge["endpoints"]["haproxy_http"]
    # Opened before the reload, so the old HAProxy worker keeps serving them.
    sessions = [WebSocketSession(haproxy_url.replace("http://", "ws://") + "/ws") for _ in range(3)]
    # The change stays on disk for the two converges only.
    with host_vars({EDGE1: CHANGE}, (INVENTORY.parent, REHEARSAL)):
        try:
            with LoadGenerator(edge["endpoints"]["nginx_https"], ca_cert, ClientIPs(), max_seconds=150) as nginx_load, \
                    haproxy_load(haproxy_url, ca_cert) as haproxy:
                for load in (nginx_load, haproxy):
                    load.wait_for_answers(50)
                first = converge()
                if first.rc == 0:
                    # Traffic on the new workers too: NGINX closes the old workers'
                    # idle keep-alive connections, so what the load sends from now
                    # on reaches the new ones; HAProxy's new worker counts its own.
                    nginx_load.wait_for_answers(50, since=time.time())
                    wait_for_new_worker_traffic(host, worker)
            echoes = []
            for n, session in enumerate(sessions):
                try:
                    session.echo(f"after reload {n}")
                    echoes.append("ok")
                except Exception as exc:  # noqa: BLE001 - any failure is a dropped WebSocket
                    echoes.append(repr(exc))
            files_after = _files(tampered)
            package_reinstalled = tampered.package(REMOVED_PACKAGE).is_installed
            second = ansible_playbook(PLAYBOOK, REHEARSAL, args=["--vault-password-file", str(VAULT_PASS)])
        finally:
            for session in sessions:
                session.close()
    for lb, report in (("nginx", nginx_load.report), ("haproxy", haproxy.report)):
        print(f"\nreload under load ({lb}): {report.requests} requests, {len(report.failures)} failed; "
              f"{report.ws_messages} WebSocket echoes, {len(report.ws_failures)} dropped")
    try:
        yield Converged(first, second, nginx_load.report, haproxy.report, echoes, masters, _masters(host), worker,
                        worker_traffic(host)[0], files_before, files_after, package_reinstalled)
    finally:
        put_back_the_inventorys_configs()


def test_the_change_reaches_both_load_balancers_by_reloads(converged):
    result = converged.first
    assert result.rc == 0, result.output[-3000:]
    assert result.changed[EDGE1] > 0
    assert {"nginx_lb : Reload nginx", "haproxy_lb : Reload haproxy"} <= set(result.handlers), result.handlers


def test_files_changed_by_hand_are_written_again(converged):
    assert converged.first.rc == 0, converged.first.output[-3000:]
    assert converged.tampered_after == converged.tampered_before
    assert converged.first.changed[EDGE2] >= len(TAMPERED), converged.first.changed_tasks.get(EDGE2)


def test_a_package_removed_by_hand_is_installed_again_with_the_others(converged):
    assert converged.first.rc == 0, converged.first.output[-3000:]
    assert converged.package_reinstalled
    changed = converged.first.changed_tasks
    # Where a package was missing, and only there, the playbook's one apt
    # transaction ran; the role that needs the package then found it.
    assert "Install the missing ones" in changed.get(EDGE2, []), changed.get(EDGE2)
    assert "Install the missing ones" not in changed.get(EDGE1, []), changed.get(EDGE1)
    assert "haproxy_lb : Install HAProxy and socat" not in changed.get(EDGE2, []), changed.get(EDGE2)


def test_a_second_converge_as_a_user_who_is_not_root_changes_nothing(converged):
    second = converged.second
    assert second.rc == 0, second.output[-3000:]
    assert set(second.changed) == {EDGE1, EDGE2} and all(n == 0 for n in second.changed.values()), \
        second.changed_tasks


def test_reloads_not_restarts(converged):
    # The masters are the same processes; HAProxy's worker is a new one.
    assert converged.masters_after == converged.masters_before, "a load balancer was restarted, not reloaded"
    assert converged.haproxy_worker_after not in (0, converged.haproxy_worker_before), "no new HAProxy worker"


def test_no_request_failed_on_either_load_balancer(converged):
    for report in (converged.nginx, converged.haproxy):
        assert report.requests > 100
        assert report.failures == [], report.failures[:5]


def test_no_websocket_was_dropped(converged):
    assert converged.nginx.ws_messages > 20
    assert converged.nginx.ws_failures == []
    # Opened on HAProxy's old worker before the reload, still answered by it.
    assert converged.echoes_after == ["ok"] * 3


def test_haproxy_runs_the_new_canary_share(converged):
    assert "proc.canary_share: type=sint value=<20>" in runtime(node(EDGE1), "get var proc.canary_share")


def test_a_slow_api_call_ends_at_the_new_response_timeout_and_ai_calls_keep_their_own(converged, https):
    client = {"x-forwarded-for": ClientIPs().take()}
    # The default pools now give up after 2 s (504, after the retry)...
    assert https.get("/api/slow", params={"delay": 3}, headers=client).status_code == 504
    # ...while the AI pool keeps its own 300 s.
    ai = https.get("/ai/slow", params={"seconds": 3}, headers=client)
    assert ai.status_code == 200
    assert ai.json()["seconds"] == 3


def test_the_denied_network_gets_403_on_nginx(converged, https):
    assert https.get("/api/x", headers={"x-forwarded-for": "192.0.2.77"}).status_code == 403
    assert https.get("/api/x", headers={"x-forwarded-for": ClientIPs().take()}).status_code == 200


@pytest.mark.parametrize("lb", ["nginx", "haproxy"])
def test_both_load_balancers_enforce_the_new_burst(converged, edge, ca_cert, lb):
    new, old = lab_policy(POLICY_EDIT).traffic_class("api").rate, lab_policy().traffic_class("api").rate
    url = edge["endpoints"]["nginx_https" if lb == "nginx" else "haproxy_http"]
    who = {"x-forwarded-for": ClientIPs().take().replace(".7", ".77")}
    # Sent at once, over many connections: one after another, a busy machine
    # may never outrun what the bucket refills each second.
    count = new.burst + 4 * new.per_second
    with httpx.Client(base_url=url, verify=tls_context(ca_cert), timeout=10,
                      limits=httpx.Limits(max_connections=SENDERS)) as c, ThreadPoolExecutor(SENDERS) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda _: c.get("/api/new-burst", headers=who).status_code, range(count)))
        elapsed = time.monotonic() - started
    served = codes.count(200)
    print(f"\n{lb}: {served} of {count} served in {elapsed:.2f}s")
    assert set(codes) <= {200, 429}, codes
    # More than the old limits could have let through in that time...
    assert served > old.burst + 1 + old.per_second * elapsed, (served, elapsed)
    # ...at least the new burst, and a limit still: the rest refused.
    assert served >= new.burst + 1 and 429 in codes, (served, elapsed)
