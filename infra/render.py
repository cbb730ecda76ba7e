"""Write every object a stack would create as plain YAML, without a cluster.

    python -m infra.render --stack prod --out rendered/prod

Runs infra/__main__.py under Pulumi's mocks (infra/offline.py), so the files
are what `pulumi up -s prod` would send.  In the folder:

    manifests/   one Kubernetes object per file (the mesh's Istio objects too),
                 in apply order: `kubectl diff -f DIR/manifests`,
                 `kubectl apply --dry-run=server -f DIR/manifests`, GitOps
    pulumi/      what is not an object of the cluster's API, with its Pulumi
                 type and inputs: Helm releases, the Kubernetes provider (which
                 cluster), the local stack's Docker resources
    .automata-render   the files this renderer wrote there

The folder must not exist, be empty, or be one this renderer wrote (it has
the marker).  A render replaces the files it wrote before and removes those
the stack no longer has; it never touches anything else, and refuses (exit
2) any other folder instead of clearing it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from infra import offline
from infra.settings import ConfigError

MARKER = ".automata-render"
MANIFESTS = "manifests"
NOTES = "pulumi"
# Every path this renderer writes under its folder; a marker that lists
# anything else was not written by it, and nothing it lists outside these
# is ever removed.
OWN_FILE = re.compile(rf"({MANIFESTS}|{NOTES})/[A-Za-z0-9][A-Za-z0-9._-]*\.yaml")


class Refused(Exception):
    """The folder is not one to write into; nothing was written."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def render(stack: str) -> dict[str, str]:
    """{path under the folder: YAML text} of everything the stack creates."""
    records = offline.run(stack)
    files = {}
    for index, obj in enumerate(offline.manifests(records)):
        name = _slug(f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}")
        files[f"{MANIFESTS}/{name}.yaml"] = yaml.safe_dump(obj, sort_keys=True)
    for record in records:
        if record.custom and not offline.is_manifest(record):
            name = _slug(f"{record.type.split(':')[0]}-{record.kind.lower()}-{record.name}")
            files[f"{NOTES}/{name}.yaml"] = yaml.safe_dump(
                {"type": record.type, "name": record.name, "inputs": record.inputs}, sort_keys=True)
    return files


def owned(out: Path) -> set[str]:
    """The files an earlier render wrote into `out`; Refused unless `out` may be written into."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise Refused(f"{out} is not a folder")
    marker = out / MARKER
    if not marker.is_file():
        if any(out.iterdir()):
            raise Refused(f"{out} is not empty and infra.render did not write it (it has no {MARKER}); "
                          "give a new or empty folder, or remove this one yourself")
        return set()
    try:
        listed = (yaml.safe_load(marker.read_text()) or {}).get("files")
    except (yaml.YAMLError, AttributeError):
        listed = None
    if not isinstance(listed, list) or not all(isinstance(f, str) and OWN_FILE.fullmatch(f) for f in listed):
        raise Refused(f"{marker} does not list files infra.render writes ({MANIFESTS}/*.yaml, {NOTES}/*.yaml); "
                      "remove the folder yourself if it is yours to clear")
    return set(listed)


def _mark(out: Path, stack: str, files: set[str]) -> None:
    (out / MARKER).write_text(
        "# Written by `python -m infra.render`: the files it owns in this folder.  It replaces\n"
        "# and removes only these; anything else here is left alone.\n"
        + yaml.safe_dump({"stack": stack, "files": sorted(files)}, sort_keys=True))


def write(stack: str, out: Path) -> list[Path]:
    """Render `stack` into `out`; Refused (nothing written) when `out` is not the renderer's to write."""
    files = render(stack)  # first: a stack the program refuses leaves the folder as it was
    before = owned(out)
    foreign = sorted(f for f in files if f not in before and (out / f).exists())
    if foreign:
        raise Refused(f"{out / foreign[0]} is in the way and infra.render did not write it; move it away")
    out.mkdir(parents=True, exist_ok=True)
    # Listed before they are written, so an interrupted render still owns
    # (and the next one replaces) whatever it had written.
    _mark(out, stack, before | set(files))
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    for relative in before - set(files):  # objects the stack no longer has
        stale = out / relative
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
    _mark(out, stack, set(files))
    return [out / f for f in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, choices=offline.stacks())
    parser.add_argument("--out", required=True, type=Path,
                        help="a new or empty folder, or one infra.render wrote before (it replaces only its own files)")
    args = parser.parse_args(argv)
    try:
        written = write(args.stack, args.out)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Refused as refused:
        print(f"error: refusing to render into {args.out}: {refused}", file=sys.stderr)
        return 2
    manifests = sum(p.parent.name == MANIFESTS for p in written)
    print(f"wrote stack {args.stack} to {args.out}: {manifests} Kubernetes manifests in {args.out / MANIFESTS} "
          f"(kubectl diff -f {args.out / MANIFESTS}), {len(written) - manifests} Pulumi resources in {args.out / NOTES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
