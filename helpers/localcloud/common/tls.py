"""The local hub's network identity: its own loopback address, a workspace CA, a server certificate.

IoT Hub clients hard-code parts of the connection: the service SDK always speaks `https://`
to the connection string's `HostName`, the device SDK connects to port 8883 (MQTT over TLS) of
that host and checks the host against the server certificate. So the stand-in of each workspace
gets a loopback address of its own (on Linux all of 127.0.0.0/8 is local), where it serves the
IoT Hub REST API over HTTPS and MQTT on port 8883, with a certificate for that address signed
by a CA the workspace makes on first start. Clients trust that CA for that endpoint only.

    address = hub_address(ws)                  # "127.83.17.201": stable for the workspace
    ca = ensure_ca(ws)                         # CaFiles(cert=Path, key=Path)
    srv = ensure_server_cert(ws, address)      # ServerCert(cert=Path, key=Path, ca=Path)
    ctx = server_ssl_context(ws, address)      # ssl.SSLContext for a TLS listener (MQTT broker)
    ctx = client_ssl_context(ws)               # trusts the workspace CA only

Files (directory 0700, every file 0600)::

    WORKSPACE/localcloud/tls/address.json      {"address": "127.a.b.c", "workspace": "...", "created_at": ...}
    WORKSPACE/localcloud/tls/ca.pem, ca.key    the workspace CA (EC P-256, 10 years)
    WORKSPACE/localcloud/tls/server-<address>.pem, .key   the server certificate (IP SAN = address)

The address is derived from a hash of the workspace path (so two workspaces, and parallel
tests, get different ones), written down on first use and reused afterwards even if the folder
moves. Where the platform only routes 127.0.0.1 (macOS without aliases), it falls back to
127.0.0.1. Every function here is idempotent and safe to call from several processes (a file
lock serialises the first creation).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers.errors import ConfigError

FALLBACK_ADDRESS = "127.0.0.1"
MQTT_PORT = 8883  # azure-iot-device hard-codes it; the MQTT broker of issue 14 listens here
CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class CaFiles:
    """The workspace CA: PEM certificate and PEM private key (both 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ServerCert:
    """A server certificate for `address` (IP SAN), its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path
    address: str


def _workspace(workspace: str | Path) -> Path:
    return Path(workspace).expanduser().resolve()


def tls_dir(workspace: str | Path) -> Path:
    """`WORKSPACE/localcloud/tls`, created owner-only (0700)."""
    d = _workspace(workspace) / "localcloud" / "tls"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d.parent, 0o700)
    os.chmod(d, 0o700)
    return d


@contextmanager
def _lock(workspace: str | Path) -> Iterator[None]:
    path = tls_dir(workspace) / ".lock"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# ------------------------------------------------------------------ the address
def candidate_address(workspace: str | Path, attempt: int = 0) -> str:
    """The `attempt`-th loopback address derived from the workspace path (never 127.0.0.1).

    127.a.b.c with a in 1..254, b in 0..255, c in 2..254: about 16 million addresses, so two
    workspaces collide with a chance of about n^2 / 32 million.
    """
    digest = hashlib.sha256(f"{_workspace(workspace)}#{attempt}".encode()).digest()
    return f"127.{digest[0] % 254 + 1}.{digest[1]}.{digest[2] % 253 + 2}"


def _bindable(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def _in_use(address: str, port: int = MQTT_PORT) -> bool:
    """True when something already listens on `address:port` (another workspace's hub)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((address, port)) == 0


def read_hub_address(workspace: str | Path) -> str | None:
    """The address written down for this workspace, or None before the first `hub_address()`."""
    path = _workspace(workspace) / "localcloud" / "tls" / "address.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["address"]


def hub_address(workspace: str | Path) -> str:
    """This workspace's loopback address for the hub (HTTPS and MQTT), chosen once and kept.

    Raises:
        ConfigError: the stored address file is corrupt (delete it to choose a new address).
    """
    with _lock(workspace):
        path = tls_dir(workspace) / "address.json"
        if path.is_file():
            try:
                address = json.loads(path.read_text())["address"]
                ipaddress.IPv4Address(address)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path} is not valid ({exc}); delete it and start the local cloud again") from None
            return address
        address = FALLBACK_ADDRESS
        if _bindable(candidate_address(workspace)):
            for attempt in range(8):
                cand = candidate_address(workspace, attempt)
                if not _in_use(cand):
                    address = cand
                    break
        _write_private(path, json.dumps({"address": address, "workspace": str(_workspace(workspace)),
                                         "created_at": _now().isoformat()}, indent=2).encode())
        return address


# ------------------------------------------------------------------ certificates
def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _load_cert(path: Path):

    return x509.load_pem_x509_certificate(path.read_bytes())


def _fresh(cert, days: int = RENEW_BEFORE_DAYS) -> bool:
    return cert.not_valid_after_utc - _now() > _dt.timedelta(days=days)


def ensure_ca(workspace: str | Path) -> CaFiles:
    """The workspace CA (created on first call; renewed when it expires within 30 days)."""

    with _lock(workspace):
        d = tls_dir(workspace)
        files = CaFiles(d / "ca.pem", d / "ca.key")
        if files.cert.is_file() and files.key.is_file() and _fresh(_load_cert(files.cert)):
            return files
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop local hub"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"edgeloop workspace CA {hashlib.sha256(str(_workspace(workspace)).encode()).hexdigest()[:8]}")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        # server certificates signed by an older CA are now worthless
        for old in d.glob("server-*"):
            old.unlink()
        return files


def ensure_server_cert(workspace: str | Path, address: str | None = None) -> ServerCert:
    """A server certificate for `address` (default `hub_address(workspace)`), signed by the workspace CA.

    The subject alternative names are the IP address (what clients check), plus `localhost`
    and 127.0.0.1 when the address is the fallback. Re-issued when missing, expiring within
    30 days, or not signed by the current CA.
    """

    address = address or hub_address(workspace)
    ip = ipaddress.ip_address(address)
    ca = ensure_ca(workspace)
    with _lock(workspace):
        d = tls_dir(workspace)
        out = ServerCert(d / f"server-{address}.pem", d / f"server-{address}.key", ca.cert, address)
        ca_cert = _load_cert(ca.cert)
        if out.cert.is_file() and out.key.is_file():
            current = _load_cert(out.cert)
            if _fresh(current) and current.issuer == ca_cert.subject:
                try:
                    current.verify_directly_issued_by(ca_cert)
                    return out
                except (InvalidSignature, ValueError, TypeError):
                    pass  # signed by an earlier CA: issue a new one below
        ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        sans: list[x509.GeneralName] = [x509.IPAddress(ip), x509.DNSName("localhost")]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop local hub"),
                                         x509.NameAttribute(NameOID.COMMON_NAME, address)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=SERVER_DAYS))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_private(out.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        _write_private(out.cert, cert.public_bytes(serialization.Encoding.PEM))
        return out


def ca_file(workspace: str | Path) -> Path:
    """The CA certificate clients trust for this workspace's hub (created when missing)."""
    return ensure_ca(workspace).cert


def server_ssl_context(workspace: str | Path, address: str | None = None) -> ssl.SSLContext:
    """A server-side `ssl.SSLContext` with this workspace's certificate (for the MQTT listener).

    Client certificates are requested but optional (`CERT_OPTIONAL` against the workspace CA is
    not used: X.509 devices present self-signed certificates that the broker checks by
    thumbprint), so the context asks for one without verifying its chain.
    """
    cert = ensure_server_cert(workspace, address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def client_ssl_context(workspace: str | Path) -> ssl.SSLContext:
    """A client-side `ssl.SSLContext` that trusts the workspace CA only (hostname checked)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file(workspace)))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def thumbprint(cert_pem: bytes) -> str:
    """The SHA-1 thumbprint of a PEM certificate as IoT Hub shows it (40 upper-case hex digits)."""

    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 (IoT Hub's format)


__all__ = ["hub_address", "read_hub_address", "candidate_address", "ensure_ca", "ensure_server_cert", "ca_file",
           "server_ssl_context", "client_ssl_context", "thumbprint", "tls_dir", "CaFiles", "ServerCert", "MQTT_PORT",
           "FALLBACK_ADDRESS"]
