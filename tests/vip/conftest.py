"""Fixtures of the edge_vip tests (helpers: vipkit.py)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def keepalived() -> str:
    """The keepalived binary: scripts/bootstrap.sh installs it (the package
    starts nothing on the host)."""
    path = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    assert path, "keepalived is missing: run scripts/bootstrap.sh (make test-offline does)"
    return path
