"""The platform's traffic policy: one typed model (model.py, policy.yml) and a
renderer per tier (nginx.py, haproxy.py, istio.py).  docs/traffic-policy.md."""

# Every renderer registers the checks of its tier on the model
# (model.TIER_CHECKS): imported with the package, whichever module a caller
# asks for.
from traffic import haproxy, istio, nginx  # noqa: F401
