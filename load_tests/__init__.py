"""Load tests of the whole load-balancing tier: Locust users for each traffic
class, SLO gates kept as data, reports, and a fault drill.

`python -m load_tests --help` runs them; `locust -f load_tests/locustfile.py`
works too.  How to read the results: docs/load-tests.md.
"""
