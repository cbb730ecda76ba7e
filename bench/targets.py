"""The columns of the benchmark: what runs on which port with which config.

Ports are 18xxx so nothing collides with the lab's published ports
(8000-8444, 9001-9104) or with a lab that is up while the benchmark runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from bench import render
from bench.servers import fill_template, haproxy_argv, nginx_argv

BACKEND_PORT = 18001


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # "nginx" or "haproxy", for --only
    port: int
    note: str
    # Writes the runnable config into the run's temp dir, returns its path;
    # the dict holds role variables from --set (ignored by the file configs).
    write_config: Callable[[Path, dict], Path]
    # Whether the capacity test runs against it (the configs we ship).
    capacity: bool = False
    # The path requested; "ours" may route some paths through stricter limits.
    path: str = "/"

    def argv(self, conf: Path) -> list[str]:
        return nginx_argv(conf) if self.family == "nginx" else haproxy_argv(conf)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def _from_file(template: str, name: str, port: int) -> Callable[[Path], Path]:
    def write(workdir: Path, _overrides: dict) -> Path:
        dest = workdir / name
        dest.mkdir()
        return fill_template(template, dest / template, port=port, backend_port=BACKEND_PORT)
    return write


def _lua(workdir: Path, port: int, admin_port: int) -> Path:
    dest = workdir / "nginx-lua"
    dest.mkdir()
    return fill_template("nginx-lua.conf", dest / "nginx.conf", port=port, backend_port=BACKEND_PORT,
                         admin_port=admin_port)


TARGETS = [
    Target("nginx-stock", "nginx", 18010,
           "Debian default + proxy_pass: HTTP/1.0, new upstream connection per request",
           _from_file("nginx-stock.conf", "nginx-stock", 18010)),
    Target("nginx-minimal", "nginx", 18011,
           "stock + upstream keepalive (HTTP/1.1, Connection \"\") only",
           _from_file("nginx-minimal.conf", "nginx-minimal", 18011)),
    Target("nginx-lua", "nginx", 18013,
           "minimal + the upstream chosen per request by balancer_by_lua from a shared dictionary "
           "(pool changes without a reload: python -m bench.changes)",
           lambda workdir, _overrides: _lua(workdir, 18013, admin_port=18014)),
    Target("nginx-ours", "nginx", 18012,
           "roles/nginx_lb rendered by the role; " + render.NGINX_NOTE,
           lambda workdir, overrides: render.nginx(workdir / "nginx-ours", 18012, BACKEND_PORT,
                                                   status_port=18019, overrides=overrides),
           capacity=True, path="/api/"),
    Target("haproxy-minimal", "haproxy", 18020,
           "Debian defaults (httplog, to a file as ours), one frontend/backend",
           _from_file("haproxy-minimal.cfg", "haproxy-minimal", 18020)),
    Target("haproxy-ours", "haproxy", 18021,
           "roles/haproxy_lb rendered by the role; " + render.HAPROXY_NOTE,
           lambda workdir, overrides: render.haproxy(workdir / "haproxy-ours", 18021, BACKEND_PORT,
                                                     stats_port=18029, overrides=overrides),
           capacity=True, path="/api/"),
]
