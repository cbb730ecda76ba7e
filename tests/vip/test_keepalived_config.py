"""What roles/edge_vip writes, run for real on this machine: keepalived's
own config test (`keepalived -t`, installed by scripts/bootstrap.sh), the
health-check script against live HTTP servers, the notification script's
state file and metrics."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vipkit import render, vip_vars

pytestmark = pytest.mark.as_root


class _LoadBalancer(BaseHTTPRequestHandler):
    """Answers each path with the status the test set for it; "hang" never
    answers, "drop" closes the connection without an answer (a crashed or
    stopped process)."""

    # Shared by every handler instance: http.server makes one per request.
    statuses: ClassVar[dict[str, int | str]] = {}

    def do_GET(self) -> None:  # http.server's name for it
        status = self.statuses.get(self.path, 404)
        if status == "hang":
            time.sleep(5)
            return
        if status == "drop":
            self.close_connection = True
            return
        self.send_response(int(status))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def load_balancers():
    """One loopback HTTP server standing in for both load balancers' health
    endpoints (/nginx, /haproxy); tests set what each answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoadBalancer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def node(tmp_path_factory, load_balancers) -> tuple[Path, dict]:
    """The role's files rendered once, health checks pointed at the stand-in."""
    base = f"http://127.0.0.1:{load_balancers.server_port}"
    variables = vip_vars(edge_vip_health_checks=[{"name": "nginx", "url": f"{base}/nginx"},
                                                 {"name": "haproxy", "url": f"{base}/haproxy"}])
    directory = tmp_path_factory.mktemp("node")
    result = render(directory, variables)
    assert result.rc == 0, result.failed or result.output[-3000:]
    return directory, variables


def _check(directory: Path, statuses: dict, timeout: float = 30) -> int:
    _LoadBalancer.statuses = statuses
    return subprocess.run([str(directory / "keepalived" / "edge-lb-health")], timeout=timeout).returncode


def _script_timeout(directory: Path) -> int:
    """The `timeout` of the rendered vrrp_script: when keepalived kills the check."""
    conf = (directory / "keepalived" / "keepalived.conf").read_text()
    return int(re.search(r"^\s*timeout\s+(\d+)", conf, re.M)[1])


def test_rendered_configuration_passes_keepalived_config_test(node, keepalived):
    directory, _ = node
    proc = subprocess.run([keepalived, "-t", "-f", str(directory / "keepalived" / "keepalived.conf")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_second_render_changes_nothing(node):
    directory, variables = node
    again = render(directory, variables)
    assert again.rc == 0 and again.changed == 0, again.changed_tasks


@pytest.mark.parametrize("variant", [
    {"edge_vip_preempt": True, "edge_vip_preempt_delay": 30},
    {"edge_vip_unicast": False, "edge_vip_addresses": ["10.78.9.100/24", "10.78.9.101/24"]},
], ids=["preempt-delay", "multicast-two-addresses"])
def test_other_choices_pass_keepalived_config_test(tmp_path, variant, keepalived):
    result = render(tmp_path, vip_vars(**variant))
    assert result.rc == 0, result.failed or result.output[-3000:]
    proc = subprocess.run([keepalived, "-t", "-f", str(tmp_path / "keepalived" / "keepalived.conf")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_configuration_keepalived_refuses_never_lands(tmp_path, keepalived):
    # Scripts in a directory anyone may write to are refused by keepalived's
    # script security, which only keepalived itself can see: the template's
    # `keepalived -t` fails the task and no keepalived.conf is written.
    tmp_path.chmod(0o777)
    result = render(tmp_path, vip_vars())
    assert result.rc != 0
    assert "keepalived -t" in result.failed["localhost"]["task"], result.failed
    assert not (tmp_path / "keepalived" / "keepalived.conf").exists()


def test_health_check_passes_when_both_load_balancers_answer_200(node):
    assert _check(node[0], {"/nginx": 200, "/haproxy": 200}) == 0


@pytest.mark.parametrize("statuses", [
    {"/nginx": 502, "/haproxy": 200},
    {"/nginx": 200, "/haproxy": 503},
    {"/nginx": 301, "/haproxy": 200},
    {"/haproxy": 200},  # 404: NGINX answers, but not its health path
    {"/nginx": 200, "/haproxy": "drop"},
], ids=["nginx-502", "haproxy-503", "redirect", "not-found", "no-answer"])
def test_health_check_fails_when_either_load_balancer_is_unhealthy(node, statuses):
    assert _check(node[0], statuses) != 0


def test_health_check_gives_up_on_a_hung_load_balancer_within_its_timeout(node):
    # The script must fail on its own (edge_vip_check_timeout) before
    # keepalived would kill it: run it as keepalived does, killed after the
    # rendered vrrp_script timeout (a kill raises TimeoutExpired here).
    directory = node[0]
    assert _check(directory, {"/nginx": "hang", "/haproxy": 200}, timeout=_script_timeout(directory)) != 0


def _notify(directory: Path, state: str) -> None:
    subprocess.run([str(directory / "keepalived" / "edge-vip-notify"), "INSTANCE", "edge_vip", state, "200"],
                   check=True, timeout=30)


def _state_file(directory: Path) -> dict[str, str]:
    lines = (directory / "run" / "state").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _state_metrics(directory: Path) -> dict[str, float]:
    text = (directory / "textfile" / "edge_vip.prom").read_text()
    return {s.labels["state"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "edge_vip_state" for s in family.samples}


def test_notification_publishes_each_transition(node):
    directory, _ = node
    (directory / "textfile").mkdir(exist_ok=True)
    before = int(time.time())
    for state in ("BACKUP", "MASTER", "FAULT"):
        _notify(directory, state)
        published = _state_file(directory)
        assert published["state"] == state and published["instance"] == "edge_vip"
        assert published["priority"] == "200" and int(published["since"]) >= before
        assert _state_metrics(directory) == {s: float(s == state) for s in ("MASTER", "BACKUP", "FAULT", "STOP")}


def test_notification_without_textfile_directory_still_writes_the_state(node):
    directory, _ = node
    textfile = directory / "textfile"
    for f in textfile.glob("*"):
        f.unlink()
    textfile.rmdir()
    _notify(directory, "STOP")
    assert _state_file(directory)["state"] == "STOP"
    assert not textfile.exists()
