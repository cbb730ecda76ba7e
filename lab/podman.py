"""Thin wrapper around the podman CLI with the lab's engine settings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run `podman ARGS`; raise with podman's own message when it fails."""
    proc = subprocess.run(["podman", *args], env=env(), text=True,
                          capture_output=capture, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}): "
                           f"{(proc.stderr or '').strip()}")
    return proc


def exists(kind: str, name: str) -> bool:
    """kind: container, network or image."""
    return podman(kind, "exists", name, check=False).returncode == 0


def inspect(name: str) -> dict:
    return json.loads(podman("container", "inspect", name).stdout)[0]
