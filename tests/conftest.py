"""Options every test folder shares.

`--long` (make test-long): the full form of the long lab scenarios.  Each
such scenario runs a short form in `make test`, proving the same behaviour
with fewer steps, and says in its docstring what the full form adds.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the full form of the long lab scenarios (make test-long)")


@pytest.fixture(scope="session")
def long_form(request: pytest.FixtureRequest) -> bool:
    """True under --long: a scenario runs its full form."""
    return request.config.getoption("--long")
