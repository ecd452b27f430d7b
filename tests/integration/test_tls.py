"""`keyhive server --tls-cert/--tls-key` serves HTTPS that boto3 accepts."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY, RunningServer, free_port, start_server


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp)
    port = free_port()
    server = start_server(tmp, "--dev", "--tls-cert", str(cert), "--tls-key", str(key), port=port,
                          health_url=f"https://127.0.0.1:{port}/keyhive/v1/sys/status", ca_file=cert)
    yield server, cert
    server.stop()


def test_https_round_trip_with_boto3(tls_server: tuple[RunningServer, Path]) -> None:
    server, cert = tls_server
    assert server.endpoint.startswith("https://")
    kms = boto3.client("kms", endpoint_url=server.endpoint, region_name="us-east-1", verify=str(cert),
                       aws_access_key_id=DEV_ACCESS_KEY_ID, aws_secret_access_key=DEV_SECRET_ACCESS_KEY)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"over tls")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over tls"


def test_plain_http_is_not_served(tls_server: tuple[RunningServer, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(OSError):
        urllib.request.urlopen(server.endpoint.replace("https://", "http://") + "/keyhive/health", timeout=5)


def test_untrusted_certificate_is_refused_by_clients(tls_server: tuple[RunningServer, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(server.endpoint + "/keyhive/health", timeout=5, context=ssl.create_default_context())
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
