"""The load-balancer benchmark (`python -m bench`, docs/benchmarks.md).

Measures, on the host's loopback and against one fast static backend, what
each load balancer configuration costs per proxied request: requests/s,
p50/p99 latency and the load balancer's own CPU time per request, plus how
many idle keep-alive connections one node holds with zero errors.
"""
