"""Reference backend for the Automata load-balancing lab.

A small ASGI service that behaves like the real backend where the load
balancers can see it: identity headers on every response, readiness and
liveness probes, Prometheus metrics, WebSockets, slow AI-style responses,
graceful shutdown on SIGTERM, and lab-only fault injection on a separate
admin port.  See backend/README.md for the contract.
"""
