"""The Istio mesh each stack creates: routes reach real Services and subsets,
canary/A-B splits, circuit breaking, long-lived connections, mTLS, JWT,
authorization and telemetry.  Values come from the stack files or Pulumi.yaml."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase

import pytest
from manifest_helpers import objects

from infra import naming, offline
from infra.mesh_install import CHART_REPOSITORY, ISTIO_VERSION, TRACING_PROVIDER

MESH_STACKS = ["staging", "prod"]
GATEWAY_PRINCIPAL = "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"


def virtual_service(records) -> dict:
    return objects(records, "VirtualService")["automata-edge"]["spec"]


def routes(records) -> dict[str, dict]:
    return {r["name"]: r for r in virtual_service(records)["http"]}


def destination_rules(records) -> dict[str, dict]:
    return {d["spec"]["host"]: d["spec"] for d in objects(records, "DestinationRule").values()}


def releases(records) -> dict[str, dict]:
    """Istio's Helm releases (the monitoring stack has its own)."""
    return {r.inputs["name"]: r.inputs for r in records
            if r.type == offline.HELM_RELEASE and r.inputs["repositoryOpts"]["repo"] == CHART_REPOSITORY}


def istio_objects(records) -> list[offline.Record]:
    return [r for r in records if ".istio.io/" in r.type]


def test_dev_has_no_mesh_and_local_has_no_kubernetes(records):
    assert istio_objects(records("dev")) == [] and releases(records("dev")) == {}
    assert istio_objects(records("local")) == []


@pytest.mark.parametrize(("stack", "weight"), [("staging", None), ("prod", None), ("prod", 0), ("prod", 100)])
def test_weights_sum_to_100_on_every_route(records, stack, weight):
    recs = records(stack) if weight is None else offline.run(stack, {"canaryWeight": weight})
    for route in virtual_service(recs)["http"]:
        assert sum(d["weight"] for d in route["route"]) == 100, route["name"]


@pytest.mark.parametrize(("stack", "canary_share"), [("staging", 20), ("prod", 10)])
def test_canary_gets_the_configured_share(records, stack, canary_share):
    for name, route in routes(records(stack)).items():
        if name.endswith("-ab") or name == "websocket":  # sticky: no canary dice (traffic/policy.yml)
            continue
        shares = {d["destination"]["subset"].rsplit("-", 1)[-1]: d["weight"] for d in route["route"]}
        assert shares == {"stable": 100 - canary_share, "canary": canary_share}, name


@pytest.mark.parametrize("stack", MESH_STACKS)
def test_every_routed_subset_selects_pods_behind_a_service_the_program_creates(records, stack):
    recs = records(stack)
    services = {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local": s
                for s in objects(recs, "Service").values()}
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in objects(recs, "Deployment").values()]
    rules = destination_rules(recs)
    for route in virtual_service(recs)["http"]:
        for target in (d["destination"] for d in route["route"]):
            service = services[target["host"]]
            subset = next(s for s in rules[target["host"]]["subsets"] if s["name"] == target["subset"])
            assert target["port"]["number"] in [p["port"] for p in service["spec"]["ports"]]
            # Some Deployment's pods carry the subset's labels and are behind the Service.
            selected = [labels for labels in pod_labels if subset["labels"].items() <= labels.items()]
            assert selected and all(service["spec"]["selector"].items() <= labels.items() for labels in selected)


def test_route_order_puts_ab_before_the_weighted_split_and_sends_it_all_to_canary(records):
    names = [r["name"] for r in virtual_service(records("prod"))["http"]]
    # Longest prefix first, as NGINX picks it; the sticky WebSocket class
    # takes no canary share and no A/B route (traffic/policy.yml).
    assert names == ["compute-ab", "compute", "auth-ab", "auth", "api-ab", "api", "ai-ab", "ai", "websocket"]
    ab = routes(records("prod"))["ai-ab"]
    assert [(d["destination"]["subset"], d["weight"]) for d in ab["route"]] == [("canary", 100)]
    assert {"x-automata-variant": {"exact": "canary"}} in [m.get("headers") for m in ab["match"]]


@pytest.mark.parametrize(("cookie", "canary"), [
    ("automata_variant=canary", True),
    ("theme=dark; automata_variant=canary; lang=en", True),
    ("automata_variant=canary2", False),
    ("xautomata_variant=canary", False),
    ("automata_variant=stable", False),
])
def test_ab_cookie_regex_selects_only_the_canary_cookie(records, cookie, canary):
    (regex,) = {m["headers"]["cookie"]["regex"] for m in routes(records("prod"))["api-ab"]["match"]
                if "cookie" in m.get("headers", {})}
    # Envoy full-matches RE2; this pattern uses nothing RE2 and Python disagree on.
    assert bool(re.fullmatch(regex, cookie)) is canary


def test_without_a_canary_everything_goes_to_stable_and_no_ab_route_exists():
    recs = offline.run("prod", {"canaryImage": ""})
    assert [r["name"] for r in virtual_service(recs)["http"]] == ["compute", "auth", "api", "ai", "websocket"]
    for route in virtual_service(recs)["http"]:
        assert [(d["destination"]["subset"].rsplit("-", 1)[-1], d["weight"]) for d in route["route"]] == [("stable", 100)]
    assert all(not s["name"].endswith("canary") for dr in destination_rules(recs).values() for s in dr["subsets"])


def test_routes_match_the_policy_prefixes_as_the_edge_does(records):
    # The same prefix NGINX's location and HAProxy's path_beg match: /api/...
    # (not /api itself, which gets 404 on every tier).
    assert routes(records("prod"))["api"]["match"] == [{"uri": {"prefix": "/api/"}}]
    assert routes(records("prod"))["websocket"]["match"] == [{"uri": {"prefix": "/ws"}}]


def test_websocket_route_has_no_timeout_and_sticky_client_hashing(records):
    recs = records("prod")
    ws = routes(recs)["websocket"]
    assert ws["timeout"] == "0s"  # 0s disables Envoy's route timeout
    # Upgrades that never reached a backend are retried (the policy's connect-failure only).
    assert ws["retries"] == {"attempts": 2, "perTryTimeout": "0s", "retryOn": "connect-failure,refused-stream"}
    rule = destination_rules(recs)["automata-websocket.automata.svc.cluster.local"]["trafficPolicy"]
    # sticky_client, as NGINX's hash of the client address and HAProxy's balance source.
    assert rule["loadBalancer"] == {"consistentHash": {"useSourceIp": True}}
    assert rule["connectionPool"]["http"]["idleTimeout"] == "3600s"
    assert rule["connectionPool"]["tcp"]["tcpKeepalive"]["time"] == "300s"


def test_websocket_idle_timeout_follows_the_policy_tunnel_timeout():
    recs = offline.run("prod", {"trafficPolicy": {"classes": {"websocket": {"timeouts": {"tunnel": "2h"}}}}})
    pool = destination_rules(recs)["automata-websocket.automata.svc.cluster.local"]["trafficPolicy"]["connectionPool"]
    assert pool["http"]["idleTimeout"] == pool["tcp"]["idleTimeout"] == "7200s"


def test_ai_route_allows_the_ai_response_timeout_and_retries_only_unsent_requests(records):
    ai = routes(records("prod"))["ai"]
    assert (ai["timeout"], ai["retries"]) == ("300s", {"attempts": 2, "perTryTimeout": "300s",
                                                      "retryOn": "connect-failure,refused-stream"})
    longer = routes(offline.run("prod", {"trafficPolicy": {"classes": {"ai": {"timeouts": {"response": "600s"}}}}}))["ai"]
    assert longer["timeout"] == "600s"


def test_api_and_auth_retry_only_requests_that_never_reached_a_backend(records):
    for name in ("api", "auth", "api-ab"):
        assert routes(records("prod"))[name]["retries"] == {
            "attempts": 2, "perTryTimeout": "60s", "retryOn": "connect-failure,refused-stream,reset-before-request"}
        assert routes(records("prod"))[name]["timeout"] == "60s"


def test_load_balancing_per_class(records):
    rules = destination_rules(records("prod"))
    api = rules["automata-api.automata.svc.cluster.local"]
    assert api["trafficPolicy"]["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    variant_subsets = {s["name"]: s["trafficPolicy"]["loadBalancer"] for s in api["subsets"] if "trafficPolicy" in s}
    least = {"simple": "LEAST_REQUEST"}
    assert variant_subsets == {"auth-stable": least, "auth-canary": least, "compute-stable": least, "compute-canary": least}
    assert rules["automata-ai.automata.svc.cluster.local"]["trafficPolicy"]["loadBalancer"] == {"simple": "LEAST_REQUEST"}


def test_outlier_detection_and_pool_limits_come_from_config():
    recs = offline.run("prod", {"outlierConsecutive5xxErrors": 7, "outlierInterval": 15, "outlierBaseEjectionTime": 45,
                                "outlierMaxEjectionPercent": 30, "meshMaxConnections": 64,
                                "meshMaxPendingRequests": 32})
    for rule in destination_rules(recs).values():
        policy = rule["trafficPolicy"]
        assert policy["outlierDetection"] == {"consecutive5xxErrors": 7, "interval": "15s", "baseEjectionTime": "45s",
                                              "maxEjectionPercent": 30}
        assert policy["connectionPool"]["tcp"]["maxConnections"] == 64
        assert policy["connectionPool"]["http"]["http1MaxPendingRequests"] == 32
        assert policy["tls"] == {"mode": "ISTIO_MUTUAL"}


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            yield from _diff(a.get(key), b.get(key), f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{index}]")
    elif a != b:
        yield path


def test_changing_the_canary_percentage_changes_only_the_weights(records):
    before = {r.urn: r.inputs for r in records("prod")}
    after = {r.urn: r.inputs for r in offline.run("prod", {"trafficPolicy": {"canary": {"share": 25}}})}
    assert before.keys() == after.keys()
    changed = {urn: list(_diff(before[urn], after[urn])) for urn in before if before[urn] != after[urn]}
    assert [urn.rsplit("::", 1)[-1] for urn in changed] == ["mesh-vs"]
    paths = changed[next(iter(changed))]
    assert paths and all(p.endswith(".weight") for p in paths)
    # Only the four weighted splits (the canary classes), two destinations each.
    assert len(paths) == 8


@pytest.mark.parametrize("stack", MESH_STACKS)
def test_gateway_hosts_match_the_virtual_service_and_redirect_http(records, stack):
    recs = records(stack)
    gateway = objects(recs, "Gateway")["automata-gateway"]["spec"]
    vs = virtual_service(recs)
    servers = {s["port"]["protocol"]: s for s in gateway["servers"]}
    assert set(servers) == {"HTTPS", "HTTP"}
    assert servers["HTTPS"]["hosts"] == servers["HTTP"]["hosts"] == vs["hosts"]
    assert vs["gateways"] == ["automata/automata-gateway"]
    assert servers["HTTP"]["tls"] == {"httpsRedirect": True}
    tls = servers["HTTPS"]["tls"]
    assert (tls["mode"], tls["minProtocolVersion"]) == ("SIMPLE", "TLSV1_2")
    assert all("GCM" in c or "CHACHA20" in c for c in tls["cipherSuites"])
    assert gateway["selector"] == {"istio": "ingressgateway"}


def test_stack_files_set_hosts_and_tls_secret(records):
    staging = objects(records("staging"), "Gateway")["automata-gateway"]["spec"]["servers"][0]
    assert staging["hosts"] == ["staging.automata.example.com"]
    assert staging["tls"]["credentialName"] == "automata-staging-tls"
    assert virtual_service(records("prod"))["hosts"] == ["automata.example.com", "www.automata.example.com"]


@pytest.mark.parametrize("stack", MESH_STACKS)
def test_mtls_is_strict_for_the_namespace(records, stack):
    peer = objects(records(stack), "PeerAuthentication")
    assert list(peer) == ["default"]  # the namespace-wide policy has no selector
    assert peer["default"]["spec"] == {"mtls": {"mode": "STRICT"}}
    assert peer["default"]["metadata"]["namespace"] == "automata"


def test_jwt_issuer_jwks_and_audiences_come_from_config():
    recs = offline.run("prod", {"jwtIssuer": "https://login.example.org", "jwtAudiences": ["a", "b"],
                                "jwtJwksUri": "https://login.example.org/keys"})
    (rule,) = objects(recs, "RequestAuthentication")["jwt"]["spec"]["jwtRules"]
    assert rule == {"issuer": "https://login.example.org", "jwksUri": "https://login.example.org/keys",
                    "audiences": ["a", "b"]}
    allow = objects(recs, "AuthorizationPolicy")["allow-gateway-authenticated"]["spec"]
    assert allow["rules"][0]["from"][0]["source"]["requestPrincipals"] == ["https://login.example.org/*"]


def allowed(policies: list[dict], principal: str, namespace: str, request_principal: str | None, method: str,
            path: str) -> bool:
    """Istio's decision for ALLOW-only policies: denied unless some rule matches
    (an empty policy makes the namespace deny by default)."""

    def field_ok(values, actual):
        return values is None or (actual is not None and any(fnmatchcase(actual, v) for v in values))

    def source_ok(source):
        return (field_ok(source.get("principals"), principal) and field_ok(source.get("namespaces"), namespace)
                and field_ok(source.get("requestPrincipals"), request_principal))

    def operation_ok(operation):
        return field_ok(operation.get("paths"), path) and field_ok(operation.get("methods"), method)

    for policy in policies:
        assert policy.get("action", "ALLOW") == "ALLOW"
        for rule in policy.get("rules", []):
            if (any(source_ok(f["source"]) for f in rule.get("from", [{"source": {}}]))
                    and any(operation_ok(t["operation"]) for t in rule.get("to", [{"operation": {}}]))):
                return True
    return False


TOKEN = "https://auth.automata.example.com/user-1"
MONITORING = "cluster.local/ns/monitoring/sa/prometheus"


@pytest.mark.parametrize(("principal", "namespace", "token", "method", "path", "expected"), [
    (GATEWAY_PRINCIPAL, "istio-ingress", TOKEN, "POST", "/api/courses", True),
    (GATEWAY_PRINCIPAL, "istio-ingress", None, "POST", "/api/courses", False),
    (GATEWAY_PRINCIPAL, "istio-ingress", None, "GET", "/ws", False),
    (GATEWAY_PRINCIPAL, "istio-ingress", TOKEN, "GET", "/ws", True),
    (GATEWAY_PRINCIPAL, "istio-ingress", None, "POST", "/auth/login", True),
    (GATEWAY_PRINCIPAL, "istio-ingress", "https://evil.example.com/x", "POST", "/ai/complete", False),
    (GATEWAY_PRINCIPAL, "istio-ingress", TOKEN, "GET", "/metrics", False),
    ("cluster.local/ns/other/sa/default", "other", TOKEN, "GET", "/api/courses", False),
    (MONITORING, "monitoring", None, "GET", "/metrics", True),
    (MONITORING, "monitoring", None, "GET", "/health/detailed", True),
    (MONITORING, "monitoring", None, "POST", "/api/courses", False),
])
def test_authorization_denies_by_default_and_protects_paths(records, principal, namespace, token, method, path,
                                                            expected):
    policies = objects(records("prod"), "AuthorizationPolicy")
    assert policies["deny-by-default"]["spec"] == {}
    specs = [p["spec"] for p in policies.values()]
    assert allowed(specs, principal, namespace, token, method, path) is expected


def test_telemetry_traces_to_the_provider_istiod_is_configured_with(records):
    recs = records("staging")
    istiod = releases(recs)["istiod"]["values"]["meshConfig"]
    (provider,) = istiod["extensionProviders"]
    assert provider == {"name": TRACING_PROVIDER, "opentelemetry": {
        "service": "jaeger-collector.observability.svc.cluster.local", "port": 4317}}
    telemetry = {t["metadata"]["namespace"]: t["spec"] for t in objects(recs, "Telemetry").values()}
    assert set(telemetry) == {"automata", "istio-ingress"}
    for spec in telemetry.values():
        (tracing,) = spec["tracing"]
        assert tracing["providers"] == [{"name": TRACING_PROVIDER}]
        assert tracing["randomSamplingPercentage"] == 10  # staging's tracingSampling
        assert spec["accessLogging"] == [{"providers": [{"name": "envoy"}]}]
        tags = spec["metrics"][0]["overrides"][0]["tagOverrides"]
        assert tags["request_host"] == {"value": "request.host"}
    assert telemetry["istio-ingress"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert objects(offline.run("prod", {"tracingSampling": "0.5"}), "Telemetry")["automata"]["spec"]["tracing"][0][
        "randomSamplingPercentage"] == 0.5


def test_istio_is_installed_from_pinned_charts_in_dependency_order(records):
    recs = records("prod")
    installed = releases(recs)
    assert list(installed) == ["istio-base", "istio-cni", "istiod", "istio-ingressgateway"]
    for release in installed.values():
        assert release["version"] == ISTIO_VERSION
        assert release["repositoryOpts"] == {"repo": CHART_REPOSITORY}
        assert release["atomic"] is True
    assert {r["chart"] for r in installed.values()} == {"base", "cni", "istiod", "gateway"}
    assert installed["istiod"]["values"]["pilot"] == {"cni": {"enabled": True}}
    gateway = installed["istio-ingressgateway"]
    assert gateway["namespace"] == "istio-ingress"
    assert gateway["values"]["autoscaling"] == {"enabled": True, "minReplicas": 3, "maxReplicas": 10}


def test_an_existing_mesh_is_used_without_installing_one():
    recs = offline.run("prod", {"meshInstall": False})
    assert releases(recs) == {}
    assert len(istio_objects(recs)) == len(istio_objects(offline.run("prod")))


def test_with_cni_pod_security_restricted_stays_enforced(records):
    labels = objects(records("prod"), "Namespace")["automata"]["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    without_cni = offline.run("prod", {"meshCni": False})
    assert "istio-cni" not in releases(without_cni)
    assert releases(without_cni)["istiod"]["values"]["pilot"] == {"cni": {"enabled": False}}
    assert "pod-security.kubernetes.io/enforce" not in objects(without_cni, "Namespace")["automata"]["metadata"]["labels"]


@pytest.mark.parametrize(("cls", "drain"), [("api", 70), ("websocket", 115), ("ai", 315)])
def test_sidecar_outlives_the_backend_drain(records, cls, drain):
    deployments = objects(records("prod"), "Deployment")
    for track in ("stable", "canary"):
        annotations = deployments[naming.deployment_name(cls, track)]["spec"]["template"]["metadata"]["annotations"]
        proxy = json.loads(annotations["proxy.istio.io/config"])
        assert proxy == {"terminationDrainDuration": f"{drain}s", "holdApplicationUntilProxyStarts": True}
    dev = objects(records("dev"), "Deployment")[naming.deployment_name(cls, "stable")]
    assert "proxy.istio.io/config" not in dev["spec"]["template"]["metadata"]["annotations"]


def test_route_table_covers_every_workload():
    from traffic import model
    assert model.WORKLOADS == naming.TRAFFIC_CLASSES
    assert {c.workload for c in model.load().classes} == set(naming.TRAFFIC_CLASSES)
