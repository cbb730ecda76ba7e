"""The platform's traffic policy: one typed model (model.py, policy.yml) and a
renderer per tier (nginx.py, haproxy.py, istio.py).  docs/traffic-policy.md."""
