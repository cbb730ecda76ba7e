"""Both TLS listeners of an edge node, scanned by sslyze against Mozilla's
"intermediate" profile (docs/traffic-policy.md, "The TLS profile, and scanning it"),
and what a client negotiates with HAProxy's.

The scan opens some hundreds of connections in seconds.  It runs from this
machine, which the lab's traffic policy lists as the trusted proxy in
front of the edge (the gateway address): HAProxy's per-peer connection
limits do not count trusted sources, the way an operator's scanner is
allowed in production.
"""

from __future__ import annotations

import json
import socket
import ssl
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


# --- HAProxy's TLS listener, by hand: what a client negotiates ----------------------------

# HAProxy terminates TLS on the lab inventory's second listener, reached here
# at the node's own address.
HAPROXY_TLS_PORT = 9443


def _tls(address: str, ca: str, *, max_version: ssl.TLSVersion | None = None,
         ciphers: str | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if max_version:
        context.maximum_version = max_version
    if ciphers:
        context.set_ciphers(ciphers)
    return context.wrap_socket(socket.create_connection((address, HAPROXY_TLS_PORT), timeout=5),
                               server_hostname="edge.automata.test")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_haproxy_tls_listener_terminates_modern_tls_only(edge, ca_cert):
    with _tls(edge["address"], ca_cert) as tls:
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == "h2"
    with _tls(edge["address"], ca_cert, max_version=ssl.TLSVersion.TLSv1_2) as tls:
        assert tls.version() == "TLSv1.2" and "ECDHE" in tls.cipher()[0]
        assert not tls.session.has_ticket  # no-tls-tickets
    # No DHE key exchange, nothing below TLS 1.2.
    with pytest.raises(ssl.SSLError):
        _tls(edge["address"], ca_cert, max_version=ssl.TLSVersion.TLSv1_2,
             ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(ca_cert)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.wrap_socket(socket.create_connection((edge["address"], HAPROXY_TLS_PORT), timeout=5),
                            server_hostname="edge.automata.test")


def test_haproxy_tls_requests_reach_the_backends_marked_https(edge, ca_cert):
    context = ssl.create_default_context(cafile=ca_cert)
    with context.wrap_socket(socket.create_connection((edge["address"], HAPROXY_TLS_PORT), timeout=5),
                             server_hostname="edge.automata.test") as tls:
        tls.sendall(b"GET /api/tls HTTP/1.1\r\nHost: edge.automata.test\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := tls.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"strict-transport-security: max-age=" in head.lower()
    assert json.loads(body)["headers"]["x-forwarded-proto"] == "https"
