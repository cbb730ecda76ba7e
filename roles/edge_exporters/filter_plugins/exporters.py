"""Filters for the exporters: the traffic classes NGINX's log is counted by,
and what the load balancers serve turned into textfile metrics; and the
role's variables typed by its argument spec (rolekit/typed.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

# The repository's packages, imported by path as the load-balancer roles do
# (docs/decisions.md, D5).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit import node_state, typed  # noqa: E402
from traffic import model  # noqa: E402

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PREFIX = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def classes(policy_file: str, overrides: dict | None, extra: list) -> list[dict]:
    """[{name, path_prefixes}] of the policy's classes plus `extra`, most
    specific first: a class is tried before every class whose prefix is a
    prefix of its own."""
    policy = model.load(policy_file, overrides or {})
    found = [{"name": c.name, "path_prefixes": list(c.paths)} for c in policy.classes]
    found += [{"name": e["name"], "path_prefixes": list(e["path_prefixes"])} for e in extra]
    return sorted(found, key=lambda c: -max(len(p) for p in c["path_prefixes"]))


def classes_problem(policy_file: str, overrides: dict | None, extra: list) -> str:
    """'' when the classes are usable as metric labels, else what is wrong."""
    try:
        found = classes(policy_file, overrides, extra)
    except model.PolicyError as exc:
        return str(exc)
    except (KeyError, TypeError):
        return f"edge_exporters_extra_classes entries need a name and path_prefixes, got {extra!r}"
    names = [c["name"] for c in found]
    for c in found:
        if not _NAME.match(c["name"]) or c["name"] == "other" or names.count(c["name"]) > 1:
            return (f"class {c['name']!r} cannot label metrics: names are unique, lower case, "
                    "and not 'other' (which counts paths of no class)")
        bad = [p for p in c["path_prefixes"] if not isinstance(p, str) or not _PREFIX.match(p)]
        if bad or not c["path_prefixes"]:
            return f"class {c['name']!r}: path prefixes must start with '/' and be URL path characters, got {bad}"
    return ""


def not_after(pem: str) -> int:
    """Expiry (Unix seconds) of the first certificate in a PEM text: the leaf."""
    # Imported here, not at the top: Ansible loads every filter plugin for
    # every task of a run, and cryptography's x509 costs more to import than
    # most tasks take; one task of the role reads a certificate.
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise AnsibleFilterError(f"edge_exporters_not_after: not a PEM certificate ({exc})") from exc
    return int(cert.not_valid_after_utc.timestamp())


def nginx_capacity(conf: str, cpus: int) -> int:
    """worker_processes x worker_connections of an nginx.conf ("auto" is one per CPU)."""
    def directive(name: str) -> str:
        match = re.search(rf"^\s*{name}\s+([^;\s]+)\s*;", conf, re.M)
        if not match:
            raise AnsibleFilterError(f"edge_exporters_nginx_capacity: no {name} in the NGINX configuration")
        return match.group(1)

    processes = directive("worker_processes")
    workers = int(cpus) if processes == "auto" else int(processes)
    return workers * int(directive("worker_connections"))


class FilterModule:
    def filters(self):
        return {
            "edge_exporters_classes": classes,
            "edge_exporters_classes_problem": classes_problem,
            "edge_exporters_not_after": not_after,
            "edge_exporters_nginx_capacity": nginx_capacity,
            "edge_exporters_typed": typed.for_role(__file__),
            **node_state.filters("edge_exporters"),
        }
