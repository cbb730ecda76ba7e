"""playbooks/edge.yml as a whole on the lab: what was changed behind its back
is put back, and a second converge changes nothing.

The roles read each node's files, packages and units in one round trip per
role and skip what already matches (rolekit/node_state.py), so the first
converge here also proves that a file edited, loosened or removed by hand
is found and written again.  Refused input (a wrong type, a value out of
range, a bad value on one host of two) stops the playbook before any host
is touched: tests/roles/test_refusals.py, offline.
"""

from __future__ import annotations

import pytest

from labkit import node

NODE = "edge-2"
# One file of each role, and what is done to it by hand.
TAMPERED = {
    "/etc/nginx/conf.d/routes.conf": "echo '# edited by hand' >> {path}",
    "/etc/haproxy/haproxy.cfg": "chmod 0644 {path}",
    "/etc/keepalived/edge-vip-notify": "rm {path}",
    "/etc/default/mtail": "echo 'EXTRA_ARGS=--by-hand' >> {path}",
    "/etc/systemd/system/haproxy.service.d/10-automata-nofile.conf": "rm {path}",
}


@pytest.fixture(scope="module")
def converged(converge):
    host = node(NODE)
    before = {path: (host.file(path).sha256sum, host.file(path).mode) for path in TAMPERED}
    for path, change in TAMPERED.items():
        host.run_test(change.format(path=path))
    first = converge()  # puts back the hand edits, and whatever earlier tests left
    after = {path: (host.file(path).sha256sum, host.file(path).mode) if host.file(path).exists else None
             for path in TAMPERED}
    second = converge()
    return before, first, after, second


def test_files_changed_by_hand_are_written_again(converged):
    before, first, after, _ = converged
    assert first.rc == 0, first.output[-3000:]
    assert after == before
    assert first.changed[NODE] >= len(TAMPERED), first.changed_tasks.get(NODE)


def test_second_converge_changes_nothing(converged):
    *_, second = converged
    assert second.rc == 0, second.output[-3000:]
    assert second.changed and all(n == 0 for n in second.changed.values()), second.changed_tasks
