"""One circuit breaker per endpoint (passive ejection).

closed -> open      after `failure_threshold` consecutive failed calls;
open -> half_open   once `recovery_timeout` has passed, on the next pick:
                    that call is the trial, and no other call is let
                    through while it runs;
half_open -> closed when the trial succeeds, -> open (for another
                    `recovery_timeout`) when it fails.

Results of calls that were picked before the breaker opened are ignored
while it is open: a slow success that started before the outage must not
close it, and late failures must not extend it.
"""

from __future__ import annotations

from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class Breaker:
    __slots__ = (
        "_on_change",
        "consecutive_failures",
        "failure_threshold",
        "opened_at",
        "recovery_timeout",
        "state",
        "trial_running",
    )

    def __init__(self, failure_threshold: int, recovery_timeout: float,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.trial_running = False
        self._on_change = on_change

    def _move(self, state: str) -> None:
        old, self.state = self.state, state
        if self._on_change is not None:
            self._on_change(old, state)

    def allows(self, now: float) -> bool:
        """May a call be sent now?  (Does not change the state.)"""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now - self.opened_at >= self.recovery_timeout
        return not self.trial_running

    def picked(self, now: float) -> bool:
        """A call was sent; returns True if it is the half-open trial."""
        if self.state == CLOSED:
            return False
        if self.state == OPEN:
            self._move(HALF_OPEN)
        self.trial_running = True
        return True

    def succeeded(self, trial: bool) -> None:
        if self.state == CLOSED:
            self.consecutive_failures = 0
        elif trial:
            self.trial_running = False
            self.consecutive_failures = 0
            self._move(CLOSED)

    def failed(self, trial: bool, now: float) -> None:
        if self.state == CLOSED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self.opened_at = now
                self._move(OPEN)
        elif trial:
            self.trial_running = False
            self.opened_at = now
            self._move(OPEN)

    def abandoned(self, trial: bool) -> None:
        """The call ended without a verdict (cancelled by the caller or by
        shutdown): let the next pick run the trial instead."""
        if trial:
            self.trial_running = False
