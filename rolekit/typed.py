"""A role's variables, typed as its meta/argument_specs.yml declares them.

`-e name=value` hands Ansible a string, and extra vars outrank every other
source, set_fact included: a role cannot put the typed value back under the
variable's own name.  So each role's validate step passes all of its
variables through its `<role>_typed` filter once and keeps the result in
one fact, `_<role>_vars`, keyed by the name without the role prefix; the
rest of the role reads only that (docs/decisions.md, D6).

The conversions are the argument-spec check's own
(ansible.module_utils.common.validation), so a value is used exactly as it
was accepted, with two choices of ours for text from the command line:

- a list is comma-separated (`a,b`, spaces around items ignored, "" is
  []); text that starts with "[" is refused with a pointer to the JSON form
  (`-e '{"name": [...]}'`), which arrives typed;
- a `path` stays as written: the check expands `~` on the controller, which
  is wrong for paths on the node.

Options marked `no_log` stay out of the view (set_fact prints its facts at
-v); they are text and are read under their own names.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

import yaml
from ansible.errors import AnsibleFilterError
from ansible.module_utils.common import validation

_CONVERT = {
    "str": validation.check_type_str,
    "path": validation.check_type_str,
    "int": validation.check_type_int,
    "float": validation.check_type_float,
    "bool": validation.check_type_bool,
    "list": validation.check_type_list,
    "dict": validation.check_type_dict,
    "raw": validation.check_type_raw,
}


@functools.cache
def options(role_dir: Path, entry_point: str = "validate") -> dict:
    """The options of one entry point of the role's argument spec."""
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"][entry_point]["options"]


def _typed(name: str, value, spec: dict):
    kind = spec.get("type", "str")
    if kind == "list" and isinstance(value, str):
        if value.lstrip().startswith("["):
            raise AnsibleFilterError(
                f"{name}: expected a list; on the command line a list is comma-separated "
                f"(-e {name}=a,b) or JSON (-e '{{\"{name}\": [...]}}'), got {value!r}")
        value = [item.strip() for item in value.split(",")] if value.strip() else []
    try:
        value = _CONVERT[kind](value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{name}: expected {kind}, got {value!r} ({type(value).__name__})") from None
    if kind == "list" and "elements" in spec:
        element = {"type": spec["elements"], "options": spec.get("options")}
        return [_typed(f"{name}[{i}]", item, element) for i, item in enumerate(value)]
    if kind == "dict" and spec.get("options"):
        return {key: _typed(f"{name}.{key}", item, spec["options"][key]) if key in spec["options"] else item
                for key, item in value.items()}
    return value


def _suggestion(name: str, declared: dict, role: str) -> str:
    """", did you mean <the closest declared name>?" for a misspelt name, or "".

    Names are compared without the role prefix, which every name shares and
    which would make any two of them look alike; a name that was removed
    (nothing close enough) gets no guess rather than a wrong one."""
    prefix = f"{role}_"
    close = difflib.get_close_matches(name.removeprefix(prefix), [d.removeprefix(prefix) for d in declared],
                                      n=1, cutoff=0.75)
    return f", did you mean {prefix}{close[0]}?" if close else ""


def typed_view(values: dict, role_dir: Path) -> dict:
    """{name without the role prefix: typed value} for every variable of the
    role in `values` ({name: value}, every variable named `<role>_*`)."""
    role = role_dir.name
    spec = options(role_dir)
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise AnsibleFilterError(
            "; ".join(f"{name}: not a variable of role {role}{_suggestion(name, spec, role)}" for name in unknown)
            + f" (roles/{role}/meta/argument_specs.yml lists them)")
    view = {}
    for name, spec_of_name in spec.items():
        key = name.removeprefix(f"{role}_")
        if hasattr(dict, key):
            # Jinja would find the dict method before the key (_role.items).
            raise AnsibleFilterError(f"{name}: '{key}' is a dict method name; rename the variable")
        if name in values and not spec_of_name.get("no_log"):
            view[key] = _typed(name, values[name], spec_of_name)
    return view


def for_role(plugin_file: str):
    """The `<role>_typed` filter of the role whose filter_plugins/ holds `plugin_file`."""
    return functools.partial(typed_view, role_dir=Path(plugin_file).resolve().parents[1])
