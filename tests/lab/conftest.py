"""Fixtures for the tests that run against the live lab (`python -m lab up`).

The lab describes itself in .lab/lab.json; nothing here hard-codes an
address or a port.  Tests that change the lab (faults, converges with other
variables) undo their change in teardown so test order does not matter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_JSON = ROOT / ".lab" / "lab.json"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOK = ROOT / "playbooks" / "edge.yml"

# testinfra host spec for modules that use the `host` fixture:
#   testinfra_hosts = [EDGE_HOSTS]
EDGE_HOSTS = f"ansible://edge?ansible_inventory={INVENTORY}"


def _load_lab() -> dict:
    if not LAB_JSON.exists():
        pytest.exit(f"{LAB_JSON} is missing: bring the lab up first (`make lab`)", returncode=3)
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


@dataclass
class ConvergeResult:
    rc: int
    output: str
    changed: dict[str, int]
    failed: dict[str, int]


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run_playbook(extra_vars: dict | None = None, *, limit: str | None = None,
                 playbook: Path = PLAYBOOK, args: list[str] | None = None) -> ConvergeResult:
    """Run a playbook on the lab inventory the way a user would."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY), str(playbook)]
    vars_file = None
    if extra_vars:
        vars_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(extra_vars, vars_file)
        vars_file.close()
        cmd += ["-e", f"@{vars_file.name}"]
    if limit:
        cmd += ["--limit", limit]
    cmd += args or []
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        if vars_file:
            os.unlink(vars_file.name)
    output = proc.stdout + proc.stderr
    changed = {m[1]: int(m[3]) for m in _RECAP.finditer(output)}
    failed = {m[1]: int(m[5]) + int(m[4]) for m in _RECAP.finditer(output)}
    return ConvergeResult(proc.returncode, output, changed, failed)


@pytest.fixture(scope="session")
def converge():
    """converge(extra_vars) runs playbooks/edge.yml on the lab and returns a ConvergeResult."""
    return run_playbook
