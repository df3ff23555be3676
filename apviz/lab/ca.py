"""The lab's own certificate authority, made fresh at each lab start (``cryptography``).

Phones in the lab speak real TLS and QUIC to the fake internet, so the server name travels in a real
ClientHello, exactly as it does from a visitor's phone. For that the servers need a certificate the
phones accept: a throw-away CA created in the run directory, trusted by the lab's phones only (they get
its path; nothing is added to the host's trust store), and one server certificate naming every
catalogue name and address. EC P-256 keys: the whole set is made in a few milliseconds, so it costs
the lab's start-up nothing worth measuring.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)  # a lab lives minutes; a day of slack covers clock skew


@dataclass(frozen=True, slots=True)
class LabCA:
    """Paths of the files ``make_ca`` wrote (PEM)."""

    ca_cert: Path  # what phones trust
    cert: Path  # the servers' certificate (names and addresses as SANs)
    key: Path  # its private key (unencrypted: the lab's servers read it)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_ca(directory: Path, names: Iterable[str], addresses: Iterable[str] = ()) -> LabCA:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``directory``.

    ``names`` become DNS SANs (so a phone's SNI check passes for each), ``addresses`` IP SANs (so a
    connection to a bare address, which sends no SNI, still verifies).
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + VALIDITY
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apviz lab CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apviz lab internet")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = LabCA(ca_cert=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    out.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # The chain (leaf then CA) in one file: what dnsdist and aioquic load.
    out.cert.write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    _write_key(out.key, server_key)
    return out
