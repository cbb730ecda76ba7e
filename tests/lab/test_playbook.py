"""playbooks/edge.yml as a whole on the lab: a second converge changes nothing.

Refused input (a wrong type, a value out of range, a bad value on one host
of two) stops the playbook before any host is touched: tests/roles/test_refusals.py,
offline.
"""

from __future__ import annotations


def test_second_converge_changes_nothing(converge):
    first = converge()  # whatever earlier tests left, this brings it back
    assert first.rc == 0, first.output[-3000:]
    second = converge()
    assert second.rc == 0, second.output[-3000:]
    assert second.changed and all(n == 0 for n in second.changed.values()), second.output[-3000:]
