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

    with pytest.raises(ValueError, match="duplicate resource URN .*ConfigMap::same"):
        offline.execute(program, "dev", offline.stack_config("dev"))
