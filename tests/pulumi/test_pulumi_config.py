"""Bad stack config fails before any resource, naming the key and the problem."""

from __future__ import annotations

import pulumi
import pytest

from infra import offline
from infra.settings import ConfigError

BAD = [
    ({"apiMinReplicas": 20}, "apiMinReplicas", "20 is greater than automata:apiMaxReplicas (15)"),
    ({"cpuTarget": 0}, "cpuTarget", "between 1 and 100"),
    ({"memoryTarget": 101}, "memoryTarget", "between 1 and 100"),
    ({"image": "ghcr.io/automata/backend"}, "image", "has no tag"),
    ({"image": "ghcr.io/automata/backend:latest"}, "image", "uses :latest"),
    ({"canaryImage": "registry:5000/automata/backend"}, "canaryImage", "has no tag"),
    ({"aiGracePeriod": -1}, "aiGracePeriod", "must be >= 0"),
    ({"websocketGracePeriod": 5}, "websocketGracePeriod", "leaves no time to drain"),
    ({"apiGracePeriod": 40}, "apiGracePeriod", "in-flight requests would be killed"),
    ({"maxSurge": "0", "maxUnavailable": "0%"}, "maxUnavailable", "cannot both be 0"),
    ({"maxSurge": "150%"}, "maxSurge", "more than 100%"),
    ({"apiCpuRequest": "2", "apiCpuLimit": "500m"}, "apiCpuRequest", "above the limit"),
    ({"aiMemoryLimit": "lots"}, "aiMemoryLimit", "not a memory quantity"),
    ({"poolSize": 200}, "poolSize", "greater than automata:maxConnections (100)"),
    ({"serviceType": "Ingress"}, "serviceType", "must be one of"),
    ({"platform": "nomad"}, "platform", "must be one of"),
    ({"scaleDownWindow": 7200}, "scaleDownWindow", "between 0 and 3600"),
    # the mesh
    # the traffic policy (traffic/policy.yml): the key, then the policy field
    ({"trafficPolicy": {"canary": {"share": 101}}}, "trafficPolicy", "canary.share: must be between 0 and 100"),
    ({"trafficPolicy": {"canary": {"share": -5}}}, "trafficPolicy", "canary.share: must be between 0 and 100"),
    ({"trafficPolicy": {"classes": {"apii": {"rate": {"per_second": 5}}}}}, "trafficPolicy", "classes.apii: unknown class"),
    ({"trafficPolicy": {"classes": {"api": {"retries": {"attempts": -1}}}}}, "trafficPolicy",
     "classes.api.retries.attempts: must be between 0 and 10"),
    ({"trafficPolicy": {"classes": {"websocket": {"timeouts": {"tunnel": "forever"}}}}}, "trafficPolicy",
     "classes.websocket.timeouts.tunnel: 'forever' is not a duration"),
    ({"trafficPolicy": {"canary": {"ab_header": "X Variant"}}}, "trafficPolicy", "canary.ab_header: 'X Variant' is not"),
    ({"meshHosts": []}, "meshHosts", "at least one host"),
    ({"meshHosts": ["Automata_Example.com"]}, "meshHosts", "not a lower-case DNS name"),
    ({"meshHosts": ["https://automata.example.com"]}, "meshHosts", "not a lower-case DNS name"),
    ({"meshHosts": {"host": "automata.example.com"}}, "meshHosts", "must be a list of strings"),
    ({"meshHosts": ["a.example.com", "a.example.com"]}, "meshHosts", "twice"),
    ({"jwtIssuer": "http://auth.automata.example.com"}, "jwtIssuer", "must be an https:// URL"),
    ({"jwtIssuer": "auth.automata.example.com"}, "jwtIssuer", "must be an https:// URL"),
    ({"jwtJwksUri": "https:///keys"}, "jwtJwksUri", "must be an https:// URL"),
    ({"jwtAudiences": []}, "jwtAudiences", "non-empty list"),
    ({"outlierConsecutive5xxErrors": 0}, "outlierConsecutive5xxErrors", "must be >= 1"),
    ({"outlierInterval": -10}, "outlierInterval", "must be >= 1"),
    ({"outlierBaseEjectionTime": 0}, "outlierBaseEjectionTime", "must be >= 1"),
    ({"outlierMaxEjectionPercent": 0}, "outlierMaxEjectionPercent", "between 1 and 100"),
    ({"meshMaxConnections": 0}, "meshMaxConnections", "must be >= 1"),
    ({"mtlsMode": "DISABLE"}, "mtlsMode", "must be one of STRICT, PERMISSIVE"),
    ({"tracingSampling": "lots"}, "tracingSampling", "not a number"),
    ({"tracingSampling": "150"}, "tracingSampling", "between 0 and 100"),
    ({"tracingCollector": "jaeger"}, "tracingCollector", "must be HOST:PORT"),
    ({"tracingCollector": "jaeger.observability:99999"}, "tracingCollector", "not between 1 and 65535"),
    ({"meshTlsSecret": "TLS"}, "meshTlsSecret", "not a valid Secret name"),
    ({"meshGatewayMinReplicas": 11}, "meshGatewayMinReplicas", "greater than automata:meshGatewayMaxReplicas (10)"),
    ({"monitoringNamespace": "Monitoring"}, "monitoringNamespace", "not a valid namespace name"),
    # monitoring: thresholds are checked against monitoring/alerts.yml's declarations
    ({"alertOverrides": {"BackendHigh5xxRatio": {"ratio": "high"}}}, "alertOverrides",
     "BackendHigh5xxRatio.ratio: 'high' must be a number above 0 and at most 1"),
    ({"alertOverrides": {"BackendDown": {"for": "1m"}}}, "alertOverrides", "BackendDown: no such alert"),
    ({"alertOverrides": {"EdgeNodeDown": {"for": 60}}}, "alertOverrides", "EdgeNodeDown.for: 60 must be a duration"),
    ({"monitoringRetention": "15"}, "monitoringRetention", "'15' needs a unit"),
    ({"monitoringScrapeInterval": "fast"}, "monitoringScrapeInterval", "'fast' needs a unit"),
    ({"monitoringStorageSize": "big"}, "monitoringStorageSize", "not a memory quantity"),
    ({"monitoringSelectorLabels": {"release": 1}}, "monitoringSelectorLabels", "must map label names to strings"),
    ({"grafanaAdminSecret": "Grafana_Admin"}, "grafanaAdminSecret", "not a valid Secret name"),
    # prod is protected: it must name its cluster
    ({"kubeContext": ""}, "kubeContext", "the stack is protected (automata:protected) and names no cluster: "
                                         "set it, or automata:kubeconfig"),
]


@pytest.mark.parametrize(("overrides", "key", "problem"), BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_value_fails_naming_the_key(overrides, key, problem):
    with pytest.raises(ConfigError) as error:
        offline.run("prod", overrides)
    assert error.value.key == key
    assert str(error.value).startswith(f"config automata:{key}: ")
    assert problem in str(error.value)


def test_a_wrongly_typed_value_is_refused_by_pulumi_with_the_key():
    with pytest.raises(pulumi.ConfigTypeError, match="automata:apiMaxReplicas"):
        offline.run("prod", {"apiMaxReplicas": "ten"})


def test_a_bad_value_registers_nothing():
    # The settings are loaded before the first component, so a refused stack
    # leaves no half-built state behind.
    with pytest.raises(ConfigError):
        offline.run("dev", {"cpuTarget": 0})
    monitor = pulumi.runtime.settings.SETTINGS.monitor
    assert monitor.records == []


def test_a_duplicate_urn_is_refused():
    import pulumi_kubernetes as k8s

    def program():
        for _ in range(2):
            k8s.core.v1.ConfigMap("same", metadata={"name": "same"})

    with pytest.raises(ValueError, match=r"duplicate resource URN .*ConfigMap::same"):
        offline.execute(program, "dev", offline.stack_config("dev"))


def test_a_protected_stack_may_name_its_cluster_by_kubeconfig_alone():
    recs = offline.run("prod", {"kubeContext": "", "kubeconfig": "/etc/automata/prod.kubeconfig"})
    (provider,) = [r for r in recs if r.type == "pulumi:providers:kubernetes"]
    assert provider.inputs["kubeconfig"] == "/etc/automata/prod.kubeconfig" and "context" not in provider.inputs


def test_an_unprotected_stack_may_use_the_current_context(records):
    (provider,) = [r for r in records("dev") if r.type == "pulumi:providers:kubernetes"]
    assert "context" not in provider.inputs
    with pytest.raises(ConfigError, match="config automata:kubeContext: the stack is protected"):
        offline.run("dev", {"protected": True})


def test_the_local_stack_needs_no_cluster(records):
    recs = offline.run("local", {"protected": True})
    assert not [r for r in recs if r.type.startswith(("kubernetes:", "pulumi:providers:kubernetes"))]
