"""Both TLS listeners of an edge node, scanned by sslyze against Mozilla's
"intermediate" profile (docs/traffic-policy.md, "The TLS profile, and scanning it").

The scan opens some hundreds of connections in seconds.  It runs from this
machine, which the lab's traffic policy lists as the trusted proxy in
front of the edge (the gateway address): HAProxy's per-peer connection
limits do not count trusted sources, the way an operator's scanner is
allowed in production.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sslyze import (
    CertificateInfoExtraArgument,
    ScanCommandsExtraArguments,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)

LISTENERS = {"nginx": "nginx_https", "haproxy": "haproxy_https"}


def _scan(host: str, port: int, ca_cert: str):
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=host, port=port),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication="edge.automata.test"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(ca_cert))),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = scanner.get_results()
    return result


@pytest.mark.parametrize("lb", LISTENERS)
def test_the_tls_listener_meets_mozilla_intermediate(lb, edge, ca_cert):
    url = edge["endpoints"][LISTENERS[lb]]
    host, port = url.removeprefix("https://").split(":")
    result = _scan(host, int(port), ca_cert)
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    try:
        check_server_against_tls_configuration(result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as exc:
        pytest.fail(f"{lb} on {url}: {exc.issues}")
    # What the profile allows, the scan saw: TLS 1.2 and 1.3 only.
    accepted = {name for name in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3")
                if getattr(result.scan_result, f"{name}_cipher_suites").result.accepted_cipher_suites}
    assert accepted == {"tls_1_2", "tls_1_3"}
