"""The entry on the node: runs the operations the controller sent, in order,
and prints one JSON line: {"node", "time", and per part (nginx, haproxy,
keepalived, system) what its operation answered}, or {"error": why} at the first
refusal.  Operations before a refused one stay done: the controller sends
HAProxy's first where NGINX's checked reload must not hold HAProxy back."""

import json
import socket
import sys
import time

from automata_lb.node import haproxy, keepalived, nginx, system

PARTS = {"nginx": nginx, "haproxy": haproxy, "keepalived": keepalived, "system": system}


def main(request):
    """`request`: {"paths": where things are on this node, "ops": [[part,
    operation, {its arguments}], ...]}."""
    answer = {"node": socket.gethostname(), "time": time.time()}
    try:
        for part, operation, arguments in request["ops"]:
            answer[part] = getattr(PARTS[part], operation)(request["paths"], **arguments)
    except system.Refused as exc:
        answer = {"error": str(exc)}
    json.dump(answer, sys.stdout)
    print()
