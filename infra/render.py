"""Write every object a stack would create as plain YAML, without a cluster.

    python -m infra.render --stack prod --out rendered/prod

Runs infra/__main__.py under Pulumi's mocks (infra/offline.py), so the files
are what `pulumi up -s prod` would send: for review, `kubectl diff -f DIR`
and GitOps.  Kubernetes objects (the mesh's Istio objects too) become
manifests; other resources (Istio's Helm releases, the local stack's Docker
containers) are written with their Pulumi type and inputs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from infra import offline
from infra.settings import ConfigError


def write(stack: str, out: Path) -> list[Path]:
    records = offline.run(stack)
    if out.exists():
        shutil.rmtree(out)  # stale files would look like objects that still exist
    out.mkdir(parents=True)
    written = []
    for index, obj in enumerate(offline.manifests(records)):
        path = out / f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=True))
        written.append(path)
    for record in records:
        if record.custom and not offline.is_manifest(record):
            path = out / f"{record.type.split(':')[0]}-{record.kind.lower()}-{record.name}.yaml"
            path.write_text(yaml.safe_dump({"type": record.type, "name": record.name, "inputs": record.inputs},
                                           sort_keys=True))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, choices=offline.stacks())
    parser.add_argument("--out", required=True, type=Path, help="directory to (re)create")
    args = parser.parse_args(argv)
    try:
        written = write(args.stack, args.out)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} objects for stack {args.stack} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
