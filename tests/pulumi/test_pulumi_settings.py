"""Pulumi.yaml and infra/settings.py describe the same keys.

The CLI reads types and defaults from Pulumi.yaml; the program reads each key
as its field in infra/settings.py declares.  Neither is generated from the
other (Pulumi.yaml stays the hand-written, commented reference for users), so
they are held together here.
"""

from __future__ import annotations

from infra import offline, settings

PROJECT_KEYS = offline.project()["config"]
READ_KEYS = settings.declarations()


def _type(spec: dict) -> dict:
    return {k: spec[k] for k in ("type", "items") if k in spec}


def test_every_key_the_program_reads_is_declared_with_the_same_type():
    for key, spec in READ_KEYS.items():
        if key in PROJECT_KEYS:
            assert _type(PROJECT_KEYS[key]) == spec.reader.pulumi_type, key
        else:
            # Optional per-class keys exist only for some classes
            # (websocketRequestTimeout: WebSocket has no request timeout).
            assert not spec.required, f"{key} is read by infra/settings.py but not declared in Pulumi.yaml"


def test_every_declared_key_is_read_by_the_program():
    assert set(PROJECT_KEYS) - set(READ_KEYS) == set()


def test_every_required_key_has_a_default():
    # Defaults live only in Pulumi.yaml; a required key without one would fail
    # every stack that does not set it.
    missing = [key for key, spec in READ_KEYS.items() if spec.required and "default" not in PROJECT_KEYS.get(key, {})]
    assert missing == []
