"""The roles read their variables only through the typed view
(`_<role>_vars.x`, docs/decisions.md D6): a role variable read under its own
name is whatever the command line gave, a string.  test_command_line.py
shows the view at work on a few variables; this keeps every other read
honest."""

from __future__ import annotations

import warnings
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2 import nodes

ROLES = Path(__file__).resolve().parents[2] / "roles"
# Values of these keys are Jinja expressions without braces.
CONDITIONALS = {"when", "that", "failed_when", "changed_when", "until"}


def _names(source: str) -> set[str]:
    with warnings.catch_warnings():
        # Jinja decodes string literals such as regex('^\\[') with escapes it deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        return {n.name for n in jinja2.Environment().parse(source).find_all(nodes.Name)}


def _reads(data, key: str = "") -> set[str]:
    """Every variable name a task file's templates and conditionals read."""
    if isinstance(data, dict):
        return set().union(*(_reads(v, k) for k, v in data.items()))
    if isinstance(data, list):
        return set().union(*(_reads(v, key) for v in data))
    if isinstance(data, str) and key in CONDITIONALS:
        return _names(f"{{{{ {data} }}}}")
    if isinstance(data, str) and ("{{" in data or "{%" in data):
        return _names(data)
    return set()


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists()))
def test_a_role_reads_its_variables_only_typed(role):
    options = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    # no_log options stay out of the view (rolekit/typed.py) and are read by name.
    typed = {name for name, spec in options["validate"]["options"].items() if not spec.get("no_log")}
    raw = {}
    for path in sorted((ROLES / role).glob("*/**/*")):
        if path.parent.name in ("tasks", "handlers") and path.suffix == ".yml":
            raw[path] = _reads(yaml.safe_load(path.read_text())) & typed
        elif "templates" in path.parts and path.suffix == ".j2":
            raw[path] = _names(path.read_text()) & typed
    assert raw, f"roles/{role} has no tasks or templates"
    assert {str(p.relative_to(ROLES)): sorted(n) for p, n in raw.items() if n} == {}
