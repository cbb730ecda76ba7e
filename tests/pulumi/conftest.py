"""Fixtures for the Pulumi program's offline tests.

The program runs exactly as under `pulumi up`: infra/offline.py feeds it the
real Pulumi.yaml defaults and stacks/Pulumi.<stack>.yaml through Pulumi's
config mechanism and records every registration under Pulumi's mocks
(duplicate URNs are refused).  Runs are cached per stack: the records are
plain data, so tests can share them without re-running the program.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra import offline
from infra.offline import Record


@pytest.fixture(scope="session")
def records() -> Callable[[str], list[Record]]:
    cache: dict[str, list[Record]] = {}

    def get(stack: str) -> list[Record]:
        if stack not in cache:
            cache[stack] = offline.run(stack)
        return cache[stack]

    return get
