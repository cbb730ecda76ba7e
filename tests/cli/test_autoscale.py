"""The lab autoscaler's decisions: bounds, scale up at once, down only after
a whole cool-down below target.  Prometheus's answer is given as a number
(the lab test runs it against the real one)."""

from __future__ import annotations

from automata_lb.autoscale import Autoscaler, Policy, desired

POLICY = Policy(min_replicas=2, max_replicas=5, target_inflight=10, cooldown_s=30, interval_s=5)


class Answer:
    """What Prometheus answers for the in-flight query, set by the test."""

    def __init__(self) -> None:
        self.inflight = 0.0

    def query(self, expr: str) -> list[dict]:
        return [{"metric": {}, "value": [0, str(self.inflight)]}]


def test_desired_follows_the_load_within_the_bounds():
    assert desired(0, POLICY) == 2
    assert desired(25, POLICY) == 3      # ceil(25 / 10)
    assert desired(45, POLICY) == 5
    assert desired(500, POLICY) == 5     # never above the maximum
    assert desired(1, POLICY) == 2       # never below the minimum


def test_scales_up_at_once_and_down_only_after_the_cool_down():
    now = [0.0]
    replicas = [2]
    actions = []
    answer = Answer()

    def scale_to(n):
        actions.append((now[0], n))
        replicas[0] = n

    scaler = Autoscaler(answer, POLICY, lambda: replicas[0], scale_to, lambda _: None, clock=lambda: now[0])
    answer.inflight = 42
    assert scaler.step() == 5 and actions == [(0.0, 5)]
    answer.inflight = 5
    for t in (5, 15, 25):
        now[0] = t
        assert scaler.step() is None          # below target, but not for 30 s yet
    now[0] = 36
    assert scaler.step() == 2                 # 31 s below target since t=5
    assert actions == [(0.0, 5), (36, 2)]


def test_a_burst_during_the_cool_down_starts_it_again():
    now = [0.0]
    replicas = [4]
    answer = Answer()
    scaler = Autoscaler(answer, POLICY, lambda: replicas[0], lambda n: replicas.__setitem__(0, n),
                        lambda _: None, clock=lambda: now[0])
    answer.inflight = 5
    scaler.step()
    now[0] = 20
    answer.inflight = 40                       # exactly 4 instances' worth: no change, cool-down reset
    assert scaler.step() is None
    answer.inflight = 5
    now[0] = 40
    assert scaler.step() is None               # only 0 s below target since the burst
    now[0] = 71
    assert scaler.step() == 2
