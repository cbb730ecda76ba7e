"""Alert rules: rendered from monitoring/alerts.yml, checked and unit-tested by promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

from monitoring import dashboard, rules

HERE = __import__("pathlib").Path(__file__).parent
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is missing")


def _write_rules(tmp_path, thresholds, *, annotations=True):
    groups = rules.rule_groups(thresholds)
    if not annotations:
        for rule in groups["groups"][0]["rules"]:
            del rule["annotations"]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def _promtool(*args, cwd=None):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd)


@needs_promtool
def test_promtool_accepts_the_rendered_rules(tmp_path):
    proc = _promtool("check", "rules", str(_write_rules(tmp_path, rules.load())))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules.ALERTS)} rules found" in proc.stdout


@needs_promtool
def test_every_alert_fires_on_its_trigger_and_not_on_its_neighbours(tmp_path):
    _write_rules(tmp_path, rules.load(), annotations=False)
    cases = yaml.safe_load((HERE / "alerts_test.yml").read_text())
    cases["rule_files"] = ["rules.yml"]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    proc = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_promtool_case_and_a_runbook():
    cases = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    assert tested == set(rules.ALERTS)
    runbooks = (HERE.parents[1] / "docs" / "runbooks.md").read_text()
    for alert in rules.ALERTS:
        assert f"## {alert}\n" in runbooks, f"docs/runbooks.md has no section for {alert}"


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, spaces to
    '-', every other character but letters, digits, '-' and '_' dropped
    (a repeated heading gets -1, -2, ... after the first)."""
    anchors: set[str] = set()
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)  # a shell comment is no heading
    for heading in re.findall(r"^#+ +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_every_runbook_url_is_absolute_and_lands_on_its_section():
    # Alertmanager and Grafana show the link away from the repository: a
    # relative path there leads nowhere.
    anchors = _github_anchors((HERE.parents[1] / "docs" / "runbooks.md").read_text())
    for rule in rules.rule_groups(rules.load())["groups"][0]["rules"]:
        url = urllib.parse.urlsplit(rule["annotations"]["runbook_url"])
        assert url.scheme in ("http", "https") and url.netloc, rule["annotations"]["runbook_url"]
        assert url.path.endswith("/docs/runbooks.md"), rule["annotations"]["runbook_url"]
        assert url.fragment in anchors, f"{rule['alert']}: docs/runbooks.md has no section #{url.fragment}"


def test_the_runbooks_can_be_published_elsewhere():
    base = "https://docs.example.net/automata-lb/runbooks.html"
    groups = rules.rule_groups(rules.load(), runbook_base=base)
    urls = {r["alert"]: r["annotations"]["runbook_url"] for r in groups["groups"][0]["rules"]}
    assert urls["EdgeNodeDown"] == f"{base}#edgenodedown"
    assert all(url.startswith(f"{base}#") for url in urls.values())


@pytest.mark.parametrize("base", ["docs/runbooks.md", "/docs/runbooks.md", "ftp://example.net/runbooks.md",
                                  "https://example.net/runbooks.md#top", "https:///runbooks.md", ""])
def test_a_runbook_base_url_that_cannot_be_followed_is_refused(base):
    with pytest.raises(ValueError, match=re.escape(f"runbook base URL: {base!r} must be an absolute http(s) URL")):
        rules.rule_groups(rules.load(), runbook_base=base)


def test_cluster_only_panels_are_covered_by_synthetic_series():
    cases = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    tested = {t["expr"] for case in cases for t in case.get("promql_expr_test", [])}
    cluster_only = {expr for title, expr in dashboard.queries(dashboard.build())
                    if title in dashboard.EMPTY_ON_LAB}
    assert cluster_only and cluster_only <= tested


def test_an_override_changes_the_rendered_threshold_and_nothing_else():
    base = rules.rule_groups(rules.load())["groups"][0]["rules"]
    changed = rules.rule_groups(rules.load({"BackendHigh5xxRatio": {"ratio": 0.2, "for": "5m"}}))
    changed = changed["groups"][0]["rules"]
    diffs = [(a["alert"], k) for a, b in zip(base, changed, strict=True) for k in a if a[k] != b[k]]
    assert diffs == [("BackendHigh5xxRatio", "expr"), ("BackendHigh5xxRatio", "for")]
    rule = next(r for r in changed if r["alert"] == "BackendHigh5xxRatio")
    assert "> 0.2)" in rule["expr"] and rule["for"] == "5m"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"BackendHigh5xxRatio": {"ratio": "high"}}, "BackendHigh5xxRatio.ratio: 'high' must be a number"),
    ({"BackendHigh5xxRatio": {"ratio": 5}}, "BackendHigh5xxRatio.ratio: 5 must be a number above 0 and at most 1"),
    ({"BackendHigh5xxRatio": {"window": "30"}}, "BackendHigh5xxRatio.window: '30' must be a duration with a unit"),
    ({"EdgeNodeDown": {"for": 60}}, "EdgeNodeDown.for: 60 must be a duration"),
    ({"EdgeNodeDown": {"severity": "page"}}, "EdgeNodeDown.severity: 'page' must be one of critical, warning, info"),
    ({"EdgeNodeDown": {"ratio": 0.5}}, "EdgeNodeDown.ratio: unknown threshold"),
    ({"EdgeHighLatencyP99": {"classes": []}}, "EdgeHighLatencyP99.classes: [] must be a non-empty list"),
    ({"BackendDown": {"for": "1m"}}, "BackendDown: no such alert"),
    ({"BackendInstanceDown": "1m"}, "BackendInstanceDown: must be a mapping"),
])
def test_a_bad_override_names_the_alert_and_the_key(overrides, message):
    with pytest.raises(rules.ThresholdError) as err:
        rules.load(overrides, source="monitoring:alertOverrides")
    assert str(err.value).startswith("monitoring:alertOverrides: ")
    assert message in str(err.value)


def test_the_defaults_file_is_checked_too(tmp_path):
    broken = yaml.safe_load(rules.ALERTS_FILE.read_text())
    del broken["HPAAtMaximum"]["for"]
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(rules.ThresholdError, match=r"alerts.yml: HPAAtMaximum: missing for"):
        rules.load(path=path)
