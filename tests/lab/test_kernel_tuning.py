"""kernel_tuning on the lab edge nodes: live values, persistence, limits, host safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labkit import EDGE_HOSTS, ROOT, lab_group_vars
from lab.stack import read_host_sysctls

testinfra_hosts = [EDGE_HOSTS]

DEFAULTS = yaml.safe_load((ROOT / "roles/kernel_tuning/defaults/main.yml").read_text())
GLOBAL_PREFIXES = tuple(DEFAULTS["kernel_tuning_global_prefixes"])
NAMESPACED = {k: v for k, v in DEFAULTS["kernel_tuning_sysctl_base"].items()
              if not k.startswith(GLOBAL_PREFIXES)}
LAB_NOFILE = lab_group_vars()["kernel_tuning_nofile"]


def _words(value) -> list[str]:
    return str(value).split()


@pytest.mark.parametrize("key", sorted(NAMESPACED))
def test_namespaced_sysctl_is_live(host, key):
    live = host.run(f"sysctl -n {key}").stdout
    assert _words(live) == _words(NAMESPACED[key])


def test_sysctls_persist_for_the_next_boot(host):
    # Apply the persisted file to a fresh namespace and compare: the file on
    # disk, not just the live values, holds the tuning.
    conf = host.file("/etc/sysctl.d/60-automata-edge.conf")
    assert conf.exists and conf.user == "root" and conf.mode == 0o644
    written = dict(line.split(" = ", 1) for line in conf.content_string.splitlines()
                   if line and not line.startswith("#"))
    assert {k: _words(v) for k, v in written.items()} == {k: _words(v) for k, v in NAMESPACED.items()}
    result = host.run("unshare --net sh -c 'sysctl -q -p /etc/sysctl.d/60-automata-edge.conf "
                      "&& sysctl -n net.core.somaxconn'")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == str(NAMESPACED["net.core.somaxconn"])


def test_lab_writes_no_host_global_key(host):
    content = host.file("/etc/sysctl.d/60-automata-edge.conf").content_string
    assert not [line for line in content.splitlines() if line.startswith(GLOBAL_PREFIXES)]


@pytest.mark.parametrize("service", ["nginx", "haproxy"])
def test_service_runs_with_the_nofile_limit(host, service):
    pid = host.run(f"systemctl show -p MainPID --value {service}").stdout.strip()
    assert pid not in ("", "0"), f"{service} is not running"
    limits = host.file(f"/proc/{pid}/limits").content_string
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert int(soft) >= LAB_NOFILE and int(hard) >= LAB_NOFILE


def test_host_global_sysctls_unchanged_by_the_lab(lab):
    """The lab's nodes are containers on the host's own kernel (unprivileged, but
    a mistake in the role or the image could still reach host-global keys)."""
    before = json.loads(Path(lab["host_sysctls_before"]).read_text())
    assert before, "the lab recorded no host sysctls at `up`"
    assert read_host_sysctls() == before
