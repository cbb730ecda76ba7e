"""Fixtures for the tests that run against the live lab (`python -m lab up`).

The lab describes itself in .lab/lab.json; nothing here hard-codes an
address or a port.  Tests that change the lab (faults, converges with other
variables) undo their change in teardown so test order does not matter.
Constants and helpers shared by test modules live in labkit.py; fixtures
more than one module uses live here.
"""

from __future__ import annotations

import json

import httpx
import pytest

from labkit import INVENTORY, LAB_JSON, RUNNING_INVENTORY, ClientIPs, run_playbook, tls_context


def _load_lab() -> dict:
    if not LAB_JSON.exists():
        pytest.exit(f"{LAB_JSON} is missing: bring the lab up first (`make lab`)", returncode=3)
    if INVENTORY != RUNNING_INVENTORY:
        pytest.exit(f"{RUNNING_INVENTORY} is missing: the lab predates it; `make lab` makes it", returncode=3)
    return json.loads(LAB_JSON.read_text())


@pytest.fixture(scope="session")
def lab() -> dict:
    return _load_lab()


@pytest.fixture(scope="session")
def edge(lab) -> dict:
    """The first edge node (ports 8080/8443/8000/8404)."""
    return lab["edges"][0]


@pytest.fixture(scope="session")
def stable_backends(lab) -> list[dict]:
    return [b for b in lab["backends"] if b["version"] == "stable"]


@pytest.fixture(scope="session")
def ca_cert(lab) -> str:
    return lab["credentials"]["ca_cert"]


@pytest.fixture
def fault(lab):
    """fault("backend-2", error_rate=1.0) drives the backend's fault-injection API.

    Every backend touched is reset when the test ends.
    """
    admin = {b["name"]: b["endpoints"]["admin"] for b in lab["backends"]}
    touched: set[str] = set()

    def set_fault(name: str, **state) -> dict:
        touched.add(name)
        r = httpx.put(f"{admin[name]}/fault", json=state, timeout=5)
        r.raise_for_status()
        return r.json()

    yield set_fault
    for name in touched:
        httpx.delete(f"{admin[name]}/fault", timeout=5)


@pytest.fixture(scope="session")
def converge():
    """converge(extra_vars) runs playbooks/edge.yml on the lab and returns its
    PlaybookRun (.changed, .failures, .changed_tasks, .handlers)."""
    return run_playbook


# --- clients through edge-1 ------------------------------------------------------------

@pytest.fixture(scope="session")
def trusted_gateway(lab, edge, ca_cert) -> None:
    """Fail early and clearly if the lab inventory does not trust the gateway."""
    echo = httpx.get(f"{edge['endpoints']['nginx_https']}/api/trust", headers={"x-forwarded-for": "198.51.100.1"},
                     verify=tls_context(ca_cert), timeout=10).json()
    if echo["headers"]["x-real-ip"] != "198.51.100.1":
        pytest.fail(f"edge-1 does not trust the lab gateway {lab['network']['gateway']}: the lab inventory "
                    f"needs traffic_policy_overrides: {{trusted_proxies: [{lab['network']['gateway']}/32]}} (group_vars/edge)")


@pytest.fixture(scope="module")
def ips() -> ClientIPs:
    """Distinct client addresses, announced through the trusted gateway."""
    return ClientIPs()


@pytest.fixture(scope="module")
def https(edge, ca_cert):
    """A client for edge-1's HTTPS listener, trusting the lab CA."""
    with httpx.Client(base_url=edge["endpoints"]["nginx_https"], verify=tls_context(ca_cert), timeout=30) as client:
        yield client
