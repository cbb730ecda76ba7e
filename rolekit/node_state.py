"""What a node has now, read in one round trip per kind, so a role that finds
everything as it should be skips the tasks that would only confirm it.

A converge with nothing to do used to ask the node about each file, package
and unit in a task of its own, one round trip each (about 60 per node, most
of the time of such a run).  Each role now reads its files with one
`ansible.builtin.find` (checksums included), and its packages and units
with one command (state_command); these filters compare
what they found with what the role would write, so the tasks that write run
only where something differs, exactly as before.  Drift is still corrected:
a file edited or removed on the node differs from what the role renders.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shlex


def sha1(content: str | bytes) -> str:
    """The checksum ansible.builtin.find reports (get_checksum: sha1)."""
    return hashlib.sha1(content.encode() if isinstance(content, str) else content, usedforsecurity=False).hexdigest()


def planned(paths: list[str], contents: list[str], mode: str, owner: str | None = None,
           group: str | None = None) -> list[dict]:
    """The files a role writes, for files_to_write: each path with the content
    the role renders for it (in the same order) and its mode and owner."""
    if len(paths) != len(contents):
        raise ValueError(f"{len(paths)} paths but {len(contents)} contents")
    extra = {k: v for k, v in (("owner", owner), ("group", group)) if v}
    return [{"path": p, "content": c, "mode": mode, **extra} for p, c in zip(paths, contents, strict=True)]


def files_to_write(wanted: list[dict], found: dict | list, extra_patterns: dict | None = None) -> list[str]:
    """Paths among `wanted` that are missing on the node or differ from it.

    `wanted`: [{path, content, mode, owner?, group?}], content as the role
    renders it; `found`: an ansible.builtin.find result (or its `files`).
    `extra_patterns`: {directory: glob} of files the role removes when it
    does not want them; any such file found is reported too."""
    files = found.get("files", []) if isinstance(found, dict) else found
    by_path = {f["path"]: f for f in files}
    differ = []
    for want in wanted:
        have = by_path.get(want["path"])
        if (have is None or have.get("checksum") != sha1(want["content"])
                or int(str(have.get("mode", "0")), 8) != int(str(want["mode"]), 8)
                or ("owner" in want and have.get("pw_name") != want["owner"])
                or ("group" in want and have.get("gr_name") != want["group"])):
            differ.append(want["path"])
    if extra_patterns:
        kept = {w["path"] for w in wanted}
        for path in by_path:
            directory, _, name = path.rpartition("/")
            pattern = extra_patterns.get(directory)
            if pattern and fnmatch.fnmatch(name, pattern) and path not in kept:
                differ.append(path)
    return differ


def state_command(packages: list[str], units: list[str]) -> str:
    """One shell command that prints which of `packages` are installed and
    the state of `units`: read it with missing_packages and units_to_start."""
    return (f"dpkg-query --show --showformat='${{db:Status-Abbrev}} ${{Package}}\\n' "
            f"{' '.join(shlex.quote(p) for p in packages)} 2>/dev/null; echo; "
            f"systemctl show --property=Id,ActiveState,UnitFileState {' '.join(shlex.quote(_unit(u)) for u in units)}")


def missing_packages(dpkg_lines: list[str], names: list[str]) -> list[str]:
    """Packages of `names` not installed, from state_command's lines (or
    `dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' NAMES...`)."""
    installed = {line.split()[-1] for line in dpkg_lines if line.startswith("ii")}
    return [name for name in names if name not in installed]


def units_to_start(show_output: str, units: list[str]) -> list[str]:
    """Units of `units` not both running and enabled, from state_command's
    output (or `systemctl show -p Id -p ActiveState -p UnitFileState UNITS...`)."""
    states = {}
    for block in show_output.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            states[fields["Id"]] = fields
    up = {unit for unit, f in states.items() if f.get("ActiveState") == "active" and f.get("UnitFileState") == "enabled"}
    return [unit for unit in units if _unit(unit) not in up]


def _unit(name: str) -> str:
    return name if "." in name else f"{name}.service"


def filters(role: str) -> dict:
    """These filters under the role's prefix, for its filter plugin's
    FilterModule (a role's filters carry its name, as its variables do)."""
    return {f"{role}_planned": planned, f"{role}_files_to_write": files_to_write,
            f"{role}_state_command": state_command, f"{role}_missing_packages": missing_packages,
            f"{role}_units_to_start": units_to_start}
