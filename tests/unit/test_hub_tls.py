"""The local hub's network identity (helpers/localcloud/common/tls.py): a stable per-workspace loopback
address, a workspace CA, a server certificate for that address, owner-only files, and TLS that
only clients trusting that CA accept."""
from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading

import pytest

from helpers.localcloud.common import tls


def test_address_is_stable_loopback_and_written_down(tmp_path):
    a = tls.hub_address(tmp_path / "ws-a")
    assert ipaddress.IPv4Address(a) in ipaddress.IPv4Network("127.0.0.0/8") and a != "127.0.0.1"
    assert tls.hub_address(tmp_path / "ws-a") == a == tls.read_hub_address(tmp_path / "ws-a")
    assert tls.hub_address(tmp_path / "ws-b") != a  # another workspace, another address
    d = tmp_path / "ws-a" / "localcloud"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and stat.S_IMODE(os.stat(d / "tls").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / "tls" / "address.json").st_mode) == 0o600


def test_an_address_in_use_by_another_hub_is_skipped(tmp_path):
    ws = tmp_path / "ws"
    first = tls.candidate_address(ws, 0)
    with socket.socket() as other_hub:  # another workspace's MQTT endpoint already sits there
        other_hub.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other_hub.bind((first, tls.MQTT_PORT))
        other_hub.listen()
        assert tls.hub_address(ws) == tls.candidate_address(ws, 1)


def test_corrupt_address_file_names_the_fix(tmp_path):
    ws = tmp_path / "ws"
    tls.hub_address(ws)
    (ws / "localcloud" / "tls" / "address.json").write_text("{}")
    from helpers.errors import ConfigError

    with pytest.raises(ConfigError, match="delete it"):
        tls.hub_address(ws)


def _serve_once(ctx: ssl.SSLContext, address: str) -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind((address, 0))
    srv.listen()
    port = srv.getsockname()[1]

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"hub")
            except (ssl.SSLError, OSError):
                pass  # the untrusting client hangs up during the handshake

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t


def test_server_certificate_is_trusted_only_through_the_workspace_ca(tmp_path):
    ws = tmp_path / "ws"
    address = tls.hub_address(ws)
    cert = tls.ensure_server_cert(ws, address)
    for f in (cert.cert, cert.key, cert.ca, tls.ensure_ca(ws).key):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert tls.ensure_server_cert(ws, address) == cert and cert.cert.read_bytes() == tls.ensure_server_cert(ws).cert.read_bytes()
    port, t = _serve_once(tls.server_ssl_context(ws, address), address)
    with socket.create_connection((address, port), timeout=5) as raw:
        with tls.client_ssl_context(ws).wrap_socket(raw, server_hostname=address) as conn:  # hostname = the IP SAN
            assert conn.recv(3) == b"hub"
    t.join(5)
    port, t = _serve_once(tls.server_ssl_context(ws, address), address)
    with socket.create_connection((address, port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=address)  # the system's CAs do not know it
    t.join(5)


def test_a_new_ca_reissues_the_server_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    ws = tmp_path / "ws"
    first = tls.ensure_server_cert(ws).cert.read_bytes()
    ca = tls.ensure_ca(ws)
    ca.cert.unlink()
    ca.key.unlink()
    second = tls.ensure_server_cert(ws)
    assert second.cert.read_bytes() != first
    issued = x509.load_pem_x509_certificate(second.cert.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(second.ca.read_bytes()))
    assert tls.thumbprint(second.cert.read_bytes()) == issued.fingerprint(hashes.SHA1()).hex().upper()
