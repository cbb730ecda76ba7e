"""What 20 changes of the pools cost a client, through each load balancer
of edge-1 (make test-long; make test proves the same changes lose nothing
for a resending client in test_cli_changes.py and test_rehearsal.py).

Two clients at once per load balancer, both on keep-alive connections: one
resends an idempotent request whose connection closed before any answer
(RFC 9110, 9.2.2; browsers and most HTTP libraries do), one does not.  The
resending client must lose nothing.  What the plain client loses is
printed, per kind of change: it is the price of NGINX's reloads
(docs/decisions.md, D15), a figure and not a bound.

- membership: scale-up 1 then scale-down 1, ten times (20 changes: HAProxy
  at runtime plus a written file, NGINX a checked edit and a reload);
- weight: the canary share moved and moved back, ten times (HAProxy a
  variable, NGINX a checked file and a reload).
"""

from __future__ import annotations

import contextlib
import copy
import time

import pytest
from haproxy_lab import wait_until_settled
from labkit import ClientIPs, LoadGenerator, backends_put_back, node
from test_cli_status import HAPROXY_BACKENDS, cli

from automata_lb import backend_changes, edge, instances, targets

CHANGES = 20
ANSWERS_AFTER_EACH = 100


def _clients(edge_: dict, ca_cert: str) -> dict[tuple[str, bool], LoadGenerator]:
    return {(lb, resends): LoadGenerator(edge_["endpoints"][endpoint], ca_cert, ClientIPs(), http_workers=2,
                                         websockets=0, max_seconds=600, resend_after_close=resends)
            for lb, endpoint in (("nginx", "nginx_https"), ("haproxy", "haproxy_http")) for resends in (True, False)}


def _membership(target: targets.Target, i: int, stable: int) -> None:
    want = stable + (1 if i % 2 == 0 else 0)
    desired = backend_changes.with_stable_count(copy.deepcopy(backend_changes.current(target)), want,
                                        instances.LabInstances().spares())
    backend_changes.reconcile(target, desired, lambda _: None)


def _weight(target: targets.Target, i: int, share: int) -> None:
    edge.set_canary_share(target, share + 10 if i % 2 == 0 else share, record=True)


@pytest.fixture(scope="module")
def measured(lab, edge, ca_cert, long_form):
    if not long_form:
        pytest.skip("20 changes per kind under load: make test-long")
    results = {}
    for e in lab["edges"]:
        wait_until_settled(node(e["name"]), HAPROXY_BACKENDS)
    with backends_put_back(targets.lab(), lambda: cli("canary-abort", timeout=300)) as target:
        before = backend_changes.current(target)
        for kind, change, start in (("membership", _membership, len(before.backends)),
                                    ("weight", _weight, before.canary_share)):
            clients = _clients(edge, ca_cert)
            with contextlib.ExitStack() as running:
                for client in clients.values():
                    running.enter_context(client)
                for client in clients.values():
                    client.wait_for_answers(20)
                for i in range(CHANGES):
                    changed_at = time.time()
                    change(target, i, start)
                    # Every change meets traffic: each client has its answers from after it.
                    for client in clients.values():
                        client.wait_for_answers(ANSWERS_AFTER_EACH, since=changed_at)
            results[kind] = {key: client.report for key, client in clients.items()}
    return results


@pytest.mark.parametrize("kind", ["membership", "weight"])
def test_a_resending_client_loses_nothing_and_a_plain_one_is_counted(measured, kind):
    rows = []
    for (lb, resends), report in sorted(measured[kind].items()):
        failed = [o for o in report.outcomes if o.status != "200"]
        rows.append(f"{kind:10} {lb:8} {'resends' if resends else 'plain':8} {report.requests:6} requests "
                    f"{len(failed):3} failed {sorted({o.status for o in failed})}")
        if resends:
            assert report.failures == [], (lb, report.failures[:5])
        assert report.requests > 300, (lb, resends)
    print("\n" + "\n".join(rows))
