"""What the balancer raises.  Every error the caller can act on is a
LoadBalancerError, so one except clause maps them to a status."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting we refuse; `field` names it (the caller may map it to an
    environment variable or a command-line option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DiscoveryError(RuntimeError):
    """A discovery source could not say which endpoints exist right now.
    The balancer keeps the endpoints it knew."""


class LoadBalancerError(RuntimeError):
    pass


class NoEndpointAvailable(LoadBalancerError):
    """Every endpoint is ejected, unhealthy, draining, or none is known."""


class BalancerClosed(LoadBalancerError):
    """The balancer is shutting down and takes no new calls."""


class DeadlineExceeded(LoadBalancerError):
    """The call's overall timeout ran out (possibly across several tries)."""


class UpstreamFailed(LoadBalancerError):
    """The last try failed without a response (connection refused, reset,
    per-try timeout) and no retry was allowed; __cause__ is the last error."""
