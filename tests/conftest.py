"""Options every test folder shares.

`--long` (make test-long): the full form of the long lab scenarios.  Each
such scenario runs a short form in `make test`, proving the same behaviour
with fewer steps, and says in its docstring what the full form adds.

`@pytest.mark.as_root`: a test that renders a role onto this machine the way
it lands on a node: files chowned to the service users (haproxy, www-data),
`nginx -t` creating its temp directories for www-data, `keepalived -t`
accepting track scripts only under paths no other user can write.  Only
root can do that; for anyone else the test is skipped, saying so
(`make test`, which CI runs as root, runs them all).
"""

from __future__ import annotations

import os

import pytest

AS_ROOT_REASON = ("renders a role onto this machine as on a node (chown to service users, nginx -t, keepalived -t): "
                  "needs root; `make test` as root runs it")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "as_root: renders a role onto this machine as on a node; skipped unless root")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=AS_ROOT_REASON)
    for item in items:
        if item.get_closest_marker("as_root"):
            item.add_marker(skip)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the full form of the long lab scenarios (make test-long)")


@pytest.fixture(scope="session")
def long_form(request: pytest.FixtureRequest) -> bool:
    """True under --long: a scenario runs its full form."""
    return request.config.getoption("--long")
