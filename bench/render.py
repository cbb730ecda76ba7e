"""Render the "ours" configs with the roles themselves.

bench/render.yml includes a role's tasks/config.yml on localhost with the
variables below: everything the role writes lands in a scratch directory,
pools point at the static backend, TLS is off, and the service is not
touched.  What differs from production is listed in each NOTE, printed
under the table.
"""

from __future__ import annotations

import resource
import secrets
import sys
from pathlib import Path

from automata_lb import playbook
from traffic import model


ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = Path(__file__).parent / "render.yml"
# Request-rate limits stay in the request path (same lookups and counters)
# but with a threshold wrk never reaches: one client IP sends ~50,000 r/s.
# NGINX also needs the burst raised: limit_req refills per millisecond, so
# more than `burst` requests from one IP within the same millisecond are
# refused whatever the rate.
UNREACHABLE_RATE = 1_000_000  # the model's highest rate (1 µs between requests)
UNREACHABLE_BURST = 100_000_000

HAPROXY_NOTE = (f"path /api/ (rate-limited class), per-client rates raised to {UNREACHABLE_RATE:,}/s; "
                "in-flight limits, checks, stick tables, canary/A-B rules, headers, logs (to a file) as rendered")
NGINX_NOTE = (f"TLS off, path /api/ (rate-limited class), per-client rates raised to {UNREACHABLE_RATE:,} r/s and burst; "
              "in-flight limit, canary/A-B maps, security headers, request IDs, JSON access log as rendered")


def _unreachable_limits() -> dict:
    """Policy overrides that keep every rated class's limit in the request
    path (same lookups and counters) with a threshold wrk never reaches."""
    policy = model.load()
    return {"classes": {c.name: {"rate": {"per_second": UNREACHABLE_RATE, "burst": UNREACHABLE_BURST}}
                        for c in policy.classes if c.rate}}


def _own(role: str, overrides: dict | None) -> dict:
    """The --set overrides meant for this role (its variables carry its name)."""
    return {k: v for k, v in (overrides or {}).items() if k.startswith(f"{role}_")}


def render_role(role: str, dest: Path, variables: dict, command_line: tuple[str, ...] = ()) -> None:
    """Run a role's validate and config tasks on this machine (bench/render.yml).

    `command_line` holds `name=value` overrides passed as an operator types
    them (`-e name=value`: strings), after and above `variables`."""
    if not (ROOT / "roles" / role / "tasks" / "config.yml").exists():
        raise RuntimeError(f"roles/{role}/tasks/config.yml does not exist")
    dest.mkdir(parents=True)
    args = ["-e", f"ansible_python_interpreter={sys.executable}"]
    args += [arg for item in command_line for arg in ("-e", item)]
    run = playbook.run(PLAYBOOK, "localhost,", variables | {"bench_role": role}, args=args, timeout=300)
    if run.rc != 0:
        raise RuntimeError(f"rendering roles/{role} failed:\n{run.output[-4000:]}")


def haproxy(dest: Path, port: int, backend_port: int, stats_port: int, overrides: dict | None = None) -> Path:
    """Render roles/haproxy_lb for the benchmark; return the haproxy.cfg path."""
    # Canary pools keep the stable servers as backups, so the two lists need
    # distinct names even though both point at the one static backend.
    static = [{"name": "static", "address": "127.0.0.1", "port": backend_port}]
    static_canary = [{"name": "static-canary", "address": "127.0.0.1", "port": backend_port}]
    render_role("haproxy_lb", dest, {
        "haproxy_lb_manage_service": False,
        "haproxy_lb_config_dir": str(dest),
        "haproxy_lb_chroot": "",
        "haproxy_lb_admin_socket": str(dest / "admin.sock"),
        # HAProxy logs only to syslog targets; stdout is one, and the bench
        # sends the server's stdout to a file, as NGINX's access log goes.
        "haproxy_lb_log_target": "stdout",
        # The machine's cap, as the lab sets it via kernel_tuning_nofile.
        "haproxy_lb_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "haproxy_lb_binds": [{"address": "127.0.0.1", "port": port, "tls": False}],
        "haproxy_lb_stats_bind_address": "127.0.0.1",
        "haproxy_lb_stats_port": stats_port,
        # Throwaway: the stats page lives as long as this run.
        "haproxy_lb_stats_password": secrets.token_urlsafe(18),
        "haproxy_lb_stable_servers": static,
        "haproxy_lb_canary_servers": static_canary,
        "traffic_policy_overrides": _unreachable_limits(),
    } | _own("haproxy_lb", overrides) | _own("traffic", overrides))
    return dest / "haproxy.cfg"


def nginx(dest: Path, port: int, backend_port: int, status_port: int, overrides: dict | None = None) -> Path:
    """Render roles/nginx_lb for the benchmark; return the nginx.conf path."""
    render_role("nginx_lb", dest, {
        "nginx_lb_manage_service": False,
        "nginx_lb_conf_dir": str(dest),
        "nginx_lb_pid_file": str(dest / "nginx.pid"),
        "nginx_lb_log_dir": str(dest / "logs"),
        # The CPU per request the benchmark reports is the proxy's alone, without TLS.
        "nginx_lb_tls_enabled": False,
        # Nothing of the benchmark listens beyond loopback.
        "nginx_lb_listen_address": "127.0.0.1",
        "nginx_lb_http_port": port,
        "nginx_lb_status_port": status_port,
        # The machine's cap, as the lab sets it via kernel_tuning_nofile.
        "nginx_lb_worker_rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "nginx_lb_servers": [{"name": "static", "address": "127.0.0.1", "port": backend_port}],
        "nginx_lb_canary_servers": [{"name": "static-canary", "address": "127.0.0.1", "port": backend_port}],
        "traffic_policy_overrides": _unreachable_limits(),
    } | _own("nginx_lb", overrides) | _own("traffic", overrides))
    return dest / "nginx.conf"

