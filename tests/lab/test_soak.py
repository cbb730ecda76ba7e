"""The chaos soak in `make test-long`: fifteen minutes of the mixed load
through both load balancers of both edge nodes and the floating address,
every fault of the catalogue, each within its bound, the kill's alerts
fired and cleared, and a closing converge that changes nothing.  The
hour-long run is `make soak` (docs/soak.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from soak.faults import CATALOGUE
from tests.kit import ROOT


@pytest.fixture(scope="module")
def soaked(tmp_path_factory, long_form):
    if not long_form:
        # About five minutes with its two converges: more than make test's
        # budget has left (docs/testing.md); the fault drill's quick form
        # (test_load_tests.py) proves its events there.
        pytest.skip("make test-long: the soak, every fault of its catalogue for 15 minutes")
    reports = tmp_path_factory.mktemp("soak")
    faults = CATALOGUE
    duration = "15m"
    proc = subprocess.run([sys.executable, "-m", "soak", "--duration", duration, "--faults", ",".join(faults),
                           "--report-dir", str(reports), "--run-id", "catalogue"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    out = reports / "catalogue"
    assert (out / "soak.json").exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    print("\n" + (out / "soak.txt").read_text())
    return proc, json.loads((out / "soak.json").read_text()), out, faults


def test_every_fault_ran_and_stayed_within_its_bound(soaked):
    proc, doc, _, faults = soaked
    assert doc["faults"][0]["fault"] == "baseline"   # plain load first, judged as strictly
    assert {f["fault"] for f in doc["faults"]} - {"baseline"} == set(faults)
    for fault in doc["faults"]:
        assert fault["requests"] > 0, fault            # the load ran through every window
        assert fault["failures"] <= fault["bound"], fault
        if fault["fault"] != "backend-kill":
            assert fault["bound"] == 0, fault          # hitless by design
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_kills_alerts_fired_in_time_and_cleared(soaked):
    _, doc, _, _ = soaked
    kill = next(f for f in doc["faults"] if f["fault"] == "backend-kill")
    assert set(kill["alerts"]) == {"BackendInstanceDown", "HAProxyServerDown"}
    for name, alert in kill["alerts"].items():
        assert alert["fired_after_s"] is not None and alert["fired_after_s"] <= alert["deadline_s"], (name, alert)
        assert alert["cleared"], (name, alert)


def test_every_load_balancer_carried_the_load_and_the_lab_needs_no_converge(soaked):
    _, doc, out, _ = soaked
    names = {t["name"] for t in doc["load"]["targets"]}
    assert names == {"edge-1/nginx", "edge-1/haproxy", "edge-2/nginx", "edge-2/haproxy", "vip/nginx", "vip/haproxy"}
    assert all(sum(row[1] for row in doc["load"]["target_timeline"][n]) > 100 for n in names)
    assert doc["closing_converge"]["ok"], doc["closing_converge"]
    # Every serving process was sampled, and the report drew them.
    groups = set(doc["resources"]["trends"])
    assert {"edge-1/nginx", "edge-1/haproxy", "edge-1/keepalived", "edge-2/nginx", "prometheus"} <= groups
    assert (out / "timeline.png").stat().st_size > 10_000
    assert "timeline" in (out / "index.html").read_text()
