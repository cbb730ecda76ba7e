"""The chaos soak: an hour (or three minutes) of the mixed load through
every load balancer of the lab, faults injected one at a time, each judged
against its bound (run.py; the faults: faults.py; the gates: gates.toml;
the processes' memory and descriptors: resources.py; the verdicts:
judge.py; the report: report.py)."""
