"""Build the lab's images offline, once, and again only when their inputs change.

No image registry is reachable here, so the base image comes from
debootstrap; node and backend images are built on top of it. Each built image
is tagged with a hash of its inputs, so `up` is cheap when nothing changed and
rebuilds when the Containerfile or the backend code does.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import topology
from .podman import exists, podman

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path(__file__).with_name("images")
BACKEND_SRC = ROOT / "backend"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _log(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def ensure_base() -> None:
    if exists("image", topology.BASE_IMAGE):
        return
    _log("building the Debian 12 base image with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="automata-lab-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                       check=True, stdout=subprocess.DEVNULL)
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "-", topology.BASE_IMAGE, stdin=tar.stdout)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for base in paths:
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _tagged(image: str, digest: str) -> str:
    return f"{image.rsplit(':', 1)[0]}:{digest}"


def _ensure_built(context_name: str, image_name: str) -> str:
    """Build images/<context_name> as image_name, tagged by the context's hash."""
    context = IMAGES / context_name
    image = _tagged(image_name, _digest([context]))
    if not exists("image", image):
        _log(f"building {image}")
        podman("build", "--network=host", "-t", image, str(context), capture=False,
               stdout=subprocess.DEVNULL)
    return image


def ensure_node() -> str:
    return _ensure_built("node", topology.NODE_IMAGE)


def ensure_prometheus() -> str:
    return _ensure_built("prometheus", topology.PROMETHEUS_IMAGE)


def ensure_backend() -> str:
    requirements = BACKEND_SRC / "requirements.txt"
    image = _tagged(topology.BACKEND_IMAGE,
                    _digest([IMAGES / "backend", requirements, BACKEND_SRC / "automata_backend"]))
    if exists("image", image):
        return image
    _log(f"building {image}")
    with tempfile.TemporaryDirectory(prefix="automata-lab-backend-") as tmp:
        context = Path(tmp)
        shutil.copy(IMAGES / "backend" / "Containerfile", context / "Containerfile")
        shutil.copytree(BACKEND_SRC / "automata_backend", context / "automata_backend",
                        ignore=shutil.ignore_patterns("__pycache__"))
        # Wheels for the container's Python (Debian 12: CPython 3.11), fetched by
        # the host's pip because the image build has no registry of its own.
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                        "--target", str(context / "site"), "--only-binary=:all:",
                        "--python-version", "3.11", "--implementation", "cp",
                        "--platform", "manylinux2014_x86_64", "-r", str(requirements)],
                       check=True, capture_output=True, text=True)
        podman("build", "--network=host", "-t", image, str(context), capture=False,
               stdout=subprocess.DEVNULL)
    return image


def remove_all() -> None:
    out = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    for image in out:
        if image.startswith(f"localhost/{topology.PREFIX}-"):
            podman("rmi", "-f", image, check=False)
