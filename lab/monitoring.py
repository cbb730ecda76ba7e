"""The lab's Prometheus: its scrape configuration, its rules, its container.

Targets come from lab/topology.py, so a node added there is scraped without
another edit.  Every series of a node carries `instance: <node name>` (not
address:port), which is how the dashboard and the alerts name things, and
backends carry their `version` (stable or canary), which canary analysis
compares.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from monitoring import rules

from . import topology

OVERRIDES = Path(__file__).with_name("alert-overrides.yml")
RULES_FILE = "automata-lb.rules.yml"
BACKEND_TARGETS = "backends.json"


def _static(job: str, targets: list[tuple[str, dict[str, str]]], path: str = "/metrics") -> dict:
    return {
        "job_name": job,
        "metrics_path": path,
        "static_configs": [{"targets": [address], "labels": labels} for address, labels in targets],
    }


def scrape_config() -> dict:
    interval = f"{topology.SCRAPE_INTERVAL_SECONDS}s"
    # A stopped container does not refuse connections, it vanishes: the
    # scrape fails only when it times out, so the timeout is part of how
    # fast BackendInstanceDown fires.  A lab scrape takes milliseconds.
    timeout = f"{max(1, topology.SCRAPE_INTERVAL_SECONDS // 2)}s"
    jobs = [_static("prometheus", [(f"localhost:{topology.PROMETHEUS_PORT}",
                                    {"instance": topology.PROMETHEUS_NAME})])]
    for job, port in topology.EDGE_EXPORTERS.items():
        jobs.append(_static(job, [(f"{e.address}:{port}", {"instance": e.name}) for e in topology.EDGES]))
    # Backends come and go (automata-lb scale-up/down): Prometheus reads them
    # from a file it watches, rewritten on every change.
    jobs.append({"job_name": "backend", "metrics_path": "/metrics",
                 "file_sd_configs": [{"files": [f"/etc/prometheus/{BACKEND_TARGETS}"], "refresh_interval": interval}]})
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": timeout,
                   "evaluation_interval": interval},
        "rule_files": [f"/etc/prometheus/{RULES_FILE}"],
        "scrape_configs": jobs,
    }


def alert_rules() -> dict:
    overrides = yaml.safe_load(OVERRIDES.read_text()) or {}
    return rules.rule_groups(rules.load(overrides, source=OVERRIDES.name))


def write_backend_targets(directory: Path, backends: list[tuple[str, str, str]]) -> None:
    """The backends to scrape, [(name, address, track)]; Prometheus notices the
    new file by itself (file-based discovery)."""
    targets = [{"targets": [f"{address}:{topology.BACKEND_APP_PORT}"], "labels": {"instance": name, "version": track}}
               for name, address, track in backends]
    tmp = directory / (BACKEND_TARGETS + ".tmp")
    tmp.write_text(json.dumps(targets, indent=2) + "\n")
    tmp.chmod(0o644)
    tmp.replace(directory / BACKEND_TARGETS)  # atomic: never a half-written file


def set_backend_target(directory: Path, name: str, address: str | None, track: str = "stable") -> None:
    """Scrape one more backend (`address` given) or one fewer (None), keeping
    the others as they are."""
    path = directory / BACKEND_TARGETS
    kept = [(t["labels"]["instance"], t["targets"][0].rsplit(":", 1)[0], t["labels"]["version"])
            for t in (json.loads(path.read_text()) if path.exists() else []) if t["labels"]["instance"] != name]
    write_backend_targets(directory, kept + ([(name, address, track)] if address else []))


def write_config(directory: Path) -> bool:
    """Write prometheus.yml and the rules; True when either changed."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / BACKEND_TARGETS).exists():
        write_backend_targets(directory, [(b.name, b.address, b.version) for b in topology.BACKENDS])
    changed = False
    for name, content in (("prometheus.yml", scrape_config()), (RULES_FILE, alert_rules())):
        path = directory / name
        text = yaml.safe_dump(content, sort_keys=False, width=200)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o644)
            changed = True
    directory.chmod(0o755)
    return changed


def run_args(image: str, config_dir: Path) -> tuple[str, ...]:
    port = topology.PROMETHEUS_PORT
    return (
        "--hostname", topology.PROMETHEUS_NAME, "--network", topology.NETWORK,
        "--ip", topology.PROMETHEUS_ADDRESS,
        "--mac-address", topology.mac_address(topology.PROMETHEUS_ADDRESS),
        f"-p=127.0.0.1:{port}:{port}",
        "-v", f"{config_dir}:/etc/prometheus:ro",
        image,
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=0.0.0.0:{port}",
        # Lets `up` apply a changed config without losing the series so far;
        # the port is published on 127.0.0.1 only.
        "--web.enable-lifecycle",
    )


def url() -> str:
    return f"http://127.0.0.1:{topology.PROMETHEUS_PORT}"


def reload() -> None:
    request = urllib.request.Request(f"{url()}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def ready() -> bool:
    try:
        with urllib.request.urlopen(f"{url()}/-/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


