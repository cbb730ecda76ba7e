"""The traffic policy model: bad input is refused naming the field, before any
renderer runs; the API reads, changes and writes back a policy with validation."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from traffic import model

BAD = [
    # (overrides merged over traffic/policy.yml, field named, part of the reason)
    ({"classes": {"apii": {"rate": {"per_second": 5}}}}, "classes.apii", "unknown class"),
    ({"classes": {"auth": {"paths": ["/auth/", "/api/"]}}}, "classes.auth.paths", "already a path of class api"),
    ({"classes": {"api": {"rate": {"burst": -1}}}}, "classes.api.rate.burst", "must be >= 0, got -1"),
    ({"classes": {"api": {"rate": {"per_second": 0}}}}, "classes.api.rate.per_second", "between 1 and 1000000"),
    ({"classes": {"auth": {"balance": "sticky_cookie", "canary": False, "sticky_cookie": "srv"}}},
     "classes.auth.balance", "NGINX open source cannot set a sticky cookie"),
    ({"classes": {"api": {"balance": "ip_hash"}}}, "classes.api.balance", "must be one of round_robin"),
    ({"classes": {"websocket": {"canary": True}}}, "classes.websocket.canary", "cannot take a canary share"),
    ({"classes": {"api": {"timeouts": {"response": "60"}}}}, "classes.api.timeouts.response", "not a duration"),
    ({"classes": {"api": {"retries": {"conditions": ["503", "teapot"]}}}}, "classes.api.retries.conditions[1]",
     "must be one of connect-failure"),
    ({"classes": {"api": {"brust": 20}}}, "classes.api.brust", "unknown key"),
    ({"canary": {"share": 101}}, "canary.share", "between 0 and 100"),
    ({"canary": {"ab_cookie": "automata-variant"}}, "canary.ab_cookie", "letters, digits and _"),
    ({"trusted_proxies": ["10.0.0.1/8"]}, "trusted_proxies[0]", "host bits must be zero"),
    ({"tls": {"min_version": "TLSv1.0"}}, "tls.min_version", "must be one of TLSv1.2, TLSv1.3"),
    ({"tls": {"ciphers": ["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"]}}, "tls.ciphers[1]",
     "'AES128-SHA' is not in Mozilla's intermediate profile"),
    ({"tls": {"ciphersuites": ["TLS_AES_128_CCM_8_SHA256"]}}, "tls.ciphersuites[0]",
     "is not in Mozilla's intermediate profile"),
    ({"tls": {"curves": ["X25519", "secp521r1"]}}, "tls.curves[1]", "'secp521r1' is not in Mozilla's intermediate"),
    ({"tls": {"curves": []}}, "tls.curves", "must name at least one key-exchange group"),
    ({"headers": {"referrer_policy": 'x"; evil'}}, "headers.referrer_policy", "is not a Referrer-Policy value"),
    ({"client": {"connections_per_client": 0}}, "client.connections_per_client", "must be >= 1"),
    ({"client": {"max_body_size": "10 MB"}}, "client.max_body_size", "not a size such as 512k or 10m"),
    ({"client": {"max_body_size": "0"}}, "client.max_body_size", "at least 1 byte"),
    ({"tiers": ["nginx", "envoy"]}, "tiers[1]", "must be one of nginx"),
]


@pytest.mark.parametrize(("overrides", "field", "reason"), BAD, ids=[b[1] for b in BAD])
def test_a_malformed_policy_is_refused_naming_the_field(overrides, field, reason):
    with pytest.raises(model.PolicyError) as refused:
        model.load(overrides=overrides)
    assert refused.value.field == field
    assert reason in str(refused.value)
    assert str(refused.value).startswith(f"traffic policy: {field}: ")


@pytest.mark.parametrize(("size", "expected"), [("10m", 10 * 1024 * 1024), ("512k", 512 * 1024), ("1000", 1000)])
def test_body_sizes_read_as_nginx_reads_them_and_render_back(size, expected):
    policy = model.load(overrides={"client": {"max_body_size": size}})
    assert policy.client.max_body_bytes == expected
    assert model.format_size(expected) == size


def test_the_shipped_policy_is_valid_and_every_class_has_one_owner_per_path():
    policy = model.load()
    paths = [path for cls in policy.classes for path in cls.paths]
    assert len(paths) == len(set(paths))
    # Longest prefix first: what a first-match tier must try to pick NGINX's choice.
    assert [p for p, _ in policy.routes()][:1] == ["/api/compute/"]


def test_a_tier_that_is_not_rendered_does_not_restrict_the_policy():
    # sticky_cookie is refused because NGINX is a tier; without it, allowed.
    policy = model.load(overrides={"tiers": ["haproxy", "istio"],
                                   "classes": {"auth": {"balance": "sticky_cookie", "canary": False,
                                                        "sticky_cookie": "srv"}}})
    assert policy.traffic_class("auth").balance == "sticky_cookie"


def test_replace_returns_a_validated_copy():
    policy = model.load()
    faster = policy.replace("classes.api.rate.per_second", 20)
    assert (faster.traffic_class("api").rate.per_second, policy.traffic_class("api").rate.per_second) == (20, 10)
    assert faster.replace("canary.share", 25).canary.share == 25
    with pytest.raises(model.PolicyError, match=re.escape("classes.api.rate.burst: must be >= 0")):
        policy.replace("classes.api.rate.burst", -3)
    with pytest.raises(model.PolicyError, match=re.escape("classes.nope: unknown class")):
        policy.replace("classes.nope.rate.per_second", 3)


def test_edit_writes_one_value_back_keeping_the_comments(tmp_path):
    path = tmp_path / "policy.yml"
    shutil.copy(model.POLICY_FILE, path)
    before = path.read_text()
    policy = model.edit("classes.auth.rate.per_second", 7, path)
    assert policy.traffic_class("auth").rate.per_second == 7
    after = path.read_text()
    assert model.load(path).traffic_class("auth").rate.per_second == 7
    # Every comment line survives; only the edited line differs.
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=False) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert len(changed) == 1 and "per_second: 7" in changed[0][1]


def test_a_refused_edit_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "policy.yml"
    shutil.copy(model.POLICY_FILE, path)
    before = path.read_text()
    with pytest.raises(model.PolicyError, match=re.escape("canary.share")):
        model.edit("canary.share", 150, path)
    assert path.read_text() == before


def test_overrides_merge_key_by_key():
    policy = model.load(overrides={"classes": {"api": {"rate": {"per_second": 20}}}})
    api = policy.traffic_class("api")
    assert (api.rate.per_second, api.rate.burst) == (20, 20)  # burst kept from the file
    assert api.timeouts.response_ms == 60_000  # defaults still apply


def test_the_file_is_plain_yaml_both_tools_read():
    raw = yaml.safe_load(model.POLICY_FILE.read_text())
    assert set(raw["classes"]) == {c.name for c in model.load().classes}


def test_the_allowed_ciphers_are_the_scanners_intermediate_profile():
    # The model's allow-list and the profile the TLS scan checks against
    # (sslyze's copy of Mozilla's) must not drift apart.
    from sslyze.mozilla_tls_profile.tls_config_checker import MozillaTlsConfiguration, TlsConfigurationEnum

    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    assert set(model.INTERMEDIATE_CIPHERS) == set(profile.ciphers.openssl)
    assert set(model.INTERMEDIATE_CIPHERSUITES) == set(profile.ciphersuites)
    # sslyze names P-256 by its SECG name; OpenSSL (and so the tiers) by its X9.62 one.
    secg = {"prime256v1": "secp256r1"}
    assert {secg.get(c, c) for c in model.INTERMEDIATE_CURVES} == set(profile.tls_curves)
    assert set(profile.tls_versions) == set(model.TLS_VERSIONS)
