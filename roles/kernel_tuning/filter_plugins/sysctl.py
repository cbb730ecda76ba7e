"""Filters that keep the sysctl logic out of templates and task conditionals,
and `kernel_tuning_typed`: the role's variables typed by its argument spec."""

from __future__ import annotations

import sys
from pathlib import Path

# rolekit is the repository's, imported by path as the other roles import
# the traffic package (docs/decisions.md, D5 and D6).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from rolekit import node_state, typed  # noqa: E402


def _normalise(value) -> str:
    # The kernel reports multi-value keys tab-separated ("1024\t65535"),
    # inventories write them space-separated: compare word by word.
    return " ".join(str(value).split())


def kernel_tuning_is_global(key: str, global_prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p) for p in global_prefixes)


def kernel_tuning_scoped(sysctls: dict, global_prefixes: list[str], apply_global: bool) -> dict:
    """The keys this host may write: host-global ones only when allowed."""
    return {
        key: _normalise(value)
        for key, value in sorted(sysctls.items())
        if apply_global or not kernel_tuning_is_global(key, global_prefixes)
    }


def kernel_tuning_drift(desired: dict, live_lines: list[str]) -> list[str]:
    """`key=value` for each key whose live value differs.

    live_lines holds one `sysctl -n` line per key of `desired`, in order.
    """
    return [
        f"{key}={value}"
        for (key, value), live in zip(desired.items(), live_lines, strict=True)
        if _normalise(live) != value
    ]


class FilterModule:
    def filters(self):
        return {
            "kernel_tuning_scoped": kernel_tuning_scoped,
            "kernel_tuning_drift": kernel_tuning_drift,
            "kernel_tuning_typed": typed.for_role(__file__),
            **node_state.filters("kernel_tuning"),
        }
