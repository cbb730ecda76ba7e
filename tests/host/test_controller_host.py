"""The machine that runs bootstrap, the lab and the tests is not an edge
node: installing NGINX, HAProxy, Prometheus and keepalived for their
programs (the benchmark, `nginx -t`, `promtool`, `keepalived -t`) must not
leave their services to start at boot, where they would take :80 and
:9090 from the lab.  `make test` runs bootstrap first, so this checks what
it left on this machine."""

from __future__ import annotations

import shutil
import subprocess

import pytest

SERVICES = ("nginx", "haproxy", "prometheus", "keepalived")


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl on this machine")
@pytest.mark.parametrize("service", SERVICES)
def test_bootstrap_leaves_the_service_disabled(service):
    state = subprocess.run(["systemctl", "--root=/", "is-enabled", f"{service}.service"],
                           capture_output=True, text=True).stdout.strip()
    if state in ("", "not-found"):
        pytest.skip(f"{service} is not installed here")
    assert state in ("disabled", "masked"), f"{service}.service is {state} on the controller host"
