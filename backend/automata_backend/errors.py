"""The one error type for values we refuse (request fields, settings,
environment variables)."""

from __future__ import annotations


class InvalidField(ValueError):
    """A request or setting names a value we refuse; `field` says which one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
