"""Health checks and the circuit breaker on the lab (edge-1).

Bounds come from the running configuration: an instance whose health check
fails leaves within inter x fall (plus one interval, since the first failed
check can start up to one interval after the fault) and returns within
inter x rise of recovering.  The breaker (observe layer7) takes an
instance out after error-limit consecutive errors, a count that a passing
health check starts over.
"""

from __future__ import annotations

import time

import httpx
import pytest

from haproxy_lab import health_settings, server_states, wait_until_settled
from labkit import lab_policy, node, wait_until

POLICY = lab_policy()
BACKENDS = [c.name for c in POLICY.classes] + [c.name + "_canary" for c in POLICY.classes if c.canary]
SLACK = 1.5  # seconds: polling, scheduling


@pytest.fixture(scope="module")
def edge1():
    host = node("edge-1")
    wait_until_settled(host, BACKENDS)
    return host


@pytest.fixture(scope="module")
def settings(edge1):
    return health_settings(edge1)


def test_failing_health_check_takes_the_instance_out_and_back(edge1, settings, fault, edge):
    down_bound = settings.inter * (settings.fall + 1) + SLACK
    up_bound = settings.inter * (settings.rise + 1) + SLACK

    fault("backend-3", health="fail")
    took = wait_until(lambda: server_states(edge1, "api")["backend-3"].status.startswith("DOWN"),
                    timeout=down_bound)
    print(f"backend-3 left rotation after {took:.1f}s (bound inter x (fall+1) = {down_bound:.1f}s)")
    assert server_states(edge1, "api")["backend-3"].check_status == "L7STS"

    # Out of rotation: live traffic never reaches it.
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        seen = {client.get("/health").headers["x-backend-instance"] for _ in range(30)}
    assert "backend-3" not in seen

    fault("backend-3", health="ok")
    took = wait_until(lambda: server_states(edge1, "api")["backend-3"].status == "UP", timeout=up_bound)
    print(f"backend-3 back after {took:.1f}s (bound inter x (rise+1) = {up_bound:.1f}s)")


def test_circuit_breaker_marks_a_failing_instance_down_and_recovers(edge1, settings, fault, edge, lab):
    # backend-2 answers 500 to live requests while its health check stays
    # green: only the layer-7 observation (error-limit consecutive errors,
    # on-error mark-down) can take it out.
    fault("backend-2", error_rate=1.0, error_status=500)
    statuses, failed_at = [], []
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        for _ in range(60):  # ai: a leastconn backend without a rate limit
            r = client.get("/ai/breaker", params={"seconds": 0})
            statuses.append((r.status_code, r.headers.get("x-backend-instance")))
            if r.status_code >= 500:
                failed_at.append(time.monotonic())
    failures = [s for s in statuses if s[0] >= 500]
    state = server_states(edge1, "ai")["backend-2"]
    # Down while its health check is green: HANA (the analyzer's verdict)
    # or, once the next check has run, L7OK. Only the breaker can do that.
    assert state.status.startswith("DOWN") and state.check_status in ("HANA", "L7OK"), state
    # error-limit consecutive errors on backend-2 trip the breaker; after that
    # no client sees a 5xx (the health check alone would never have fired).
    # A passing health check clears the count of consecutive errors
    # (HAProxy's check.c, CHK_RES_PASSED), so each check that passed while
    # the errors came may add error-limit - 1 more: at most one per `inter`
    # of the time the errors took, plus one.
    checks = int((failed_at[-1] - failed_at[0]) // settings.inter) + 1 if failed_at else 0
    bound = settings.error_limit + (settings.error_limit - 1) * checks
    print(f"{len(failures)} requests failed before the breaker tripped "
          f"(error-limit {settings.error_limit}, bound with {checks} check(s) between: {bound})")
    assert 0 < len(failures) <= bound, statuses
    assert all(code < 500 for code, _ in statuses[-30:]), statuses

    # Recovery: once the instance is healthy again the checks bring it back
    # (rise) and slowstart ramps its weight; it serves live traffic again.
    # DELETE resets the instance, its own application-level breaker included.
    admin = next(b for b in lab["backends"] if b["name"] == "backend-2")["endpoints"]["admin"]
    httpx.delete(f"{admin}/fault", timeout=5).raise_for_status()
    up_bound = settings.inter * (settings.rise + 1) + SLACK
    wait_until(lambda: server_states(edge1, "ai")["backend-2"].status == "UP", timeout=up_bound)
    with httpx.Client(base_url=edge["endpoints"]["haproxy_http"], timeout=5) as client:
        def served_by_backend2() -> bool:
            r = client.get("/ai/breaker", params={"seconds": 0})
            assert r.status_code == 200
            return r.headers["x-backend-instance"] == "backend-2"
        wait_until(served_by_backend2, timeout=settings.slowstart + SLACK, interval=0.05)
