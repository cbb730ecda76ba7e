"""Shared helpers for the lab tests (importable by name from any test module).

`conftest` is not importable reliably when several test folders each have
one, so constants and helpers live here and conftest.py only holds fixtures.
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

ROOT = Path(__file__).resolve().parents[2]
LAB_JSON = ROOT / ".lab" / "lab.json"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
PLAYBOOK = ROOT / "playbooks" / "edge.yml"

# testinfra's ansible backend calls `ansible-inventory` and `ansible` from
# PATH: make the ones next to this interpreter (the .venv) win, so the suite
# works without activating the virtualenv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# testinfra host spec for modules that use the `host` fixture:
#   testinfra_hosts = [EDGE_HOSTS]
EDGE_HOSTS = f"ansible://edge?ansible_inventory={INVENTORY}"
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


LAB_GROUP_VARS = ROOT / "inventories" / "lab" / "group_vars" / "edge" / "main.yml"


def lab_policy_overrides() -> dict:
    """The lab inventory's traffic_policy_overrides (plain data, no templating)."""
    import yaml
    return yaml.safe_load(LAB_GROUP_VARS.read_text()).get("traffic_policy_overrides") or {}


def lab_policy(extra: dict | None = None):
    """The traffic policy the lab's load balancers run (traffic/policy.yml plus
    the lab's overrides, plus `extra`), for the numbers a test checks."""
    sys.path.insert(0, str(ROOT)) if str(ROOT) not in sys.path else None
    from traffic import model
    return model.load(overrides=model.deep_merge(lab_policy_overrides(), extra or {}))
