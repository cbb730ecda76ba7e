"""Pulumi program for the Automata backend on Kubernetes (and its local Docker twin).

`__main__.py` is what `pulumi up` runs; everything else is importable so the
offline renderer (`python -m infra.render`) and the tests run the same code.
"""
