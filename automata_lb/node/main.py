"""The entry on the node: runs the operations the controller sent, in order,
and prints one JSON line: {part (nginx, haproxy, keepalived, system): what
its operation answered}, or {"error": why} at the first refusal.

Operations before a refused one stay done: the controller sends HAProxy's
first where NGINX's checked reload must not hold HAProxy back."""

import importlib
import json
import sys

from automata_lb.node import system

PARTS = ("system", "nginx", "haproxy", "keepalived")


def part(name):
    """The module of part `name`, imported by name: the controller ships
    only the parts a request uses, so a runtime API call does not pay for
    NGINX's."""
    if name not in PARTS:
        raise system.Refused(f"no part {name!r} on the node (parts: {', '.join(PARTS)})")
    return importlib.import_module(f"automata_lb.node.{name}")


def main(request):
    """`request`: {"paths": where things are on this node, "ops": [[part,
    operation, {its arguments}], ...]}."""
    answer = {}
    try:
        for name, operation, arguments in request["ops"]:
            answer[name] = getattr(part(name), operation)(request["paths"], **arguments)
    except system.Refused as exc:
        answer = {"error": str(exc)}
    json.dump(answer, sys.stdout)
    print()
