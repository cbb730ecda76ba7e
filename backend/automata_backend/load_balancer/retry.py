"""When a failed try may be repeated, and how many repeats the client may
send at all (the retry budget)."""

from __future__ import annotations

from collections import deque

import httpx

# RFC 9110 idempotent methods: sending one twice has the effect of once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Answers that say "not done, try someone else".  A 500 is not among them:
# the request may have done part of its work before failing.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


def never_sent(exc: BaseException) -> bool:
    """The request provably did not reach the endpoint, so repeating it is
    safe whatever the method: the connection or a pool slot was never had."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


class RetryBudget:
    """Retries may add at most `ratio` of the calls made in the last `window`
    seconds, plus `min_per_second` x window so a quiet client can still
    retry at all (Finagle's and Linkerd's budget).  When every endpoint
    fails, this caps the extra load at ratio instead of (attempts - 1) x
    the traffic, so retries cannot turn a brownout into an outage.
    """

    def __init__(self, ratio: float = 0.2, min_per_second: float = 1.0, window: float = 10.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        # (second, calls, retries) per whole second of the window.
        self._buckets: deque[list] = deque()
        self._calls = 0
        self._retries = 0

    def _bucket(self, now: float) -> list:
        second = int(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
            horizon = second - self.window
            while buckets[0][0] <= horizon:
                _, calls, retries = buckets.popleft()
                self._calls -= calls
                self._retries -= retries
        return buckets[-1]

    def deposit(self, now: float) -> None:
        """One call (not a retry) was made."""
        self._bucket(now)[1] += 1
        self._calls += 1

    def withdraw(self, now: float) -> bool:
        """May one retry be sent now?  Counts it if so."""
        bucket = self._bucket(now)
        allowed = self.min_per_second * self.window + self.ratio * self._calls
        if self._retries + 1 > allowed:
            return False
        bucket[2] += 1
        self._retries += 1
        return True

    @property
    def balance(self) -> float:
        return self.min_per_second * self.window + self.ratio * self._calls - self._retries
