"""``quorumkv certs``: a local CA and node certificates for a test cluster.

Uses ``cryptography`` (the optional ``certs`` extra; ``pip install quorumkv[certs]``):
the standard, maintained X.509 library for Python — the stdlib ``ssl`` module can use
certificates but not make them, and hand-written ASN.1 is no place for a KV store.
Nodes themselves need only ``ssl``.

    quorumkv certs --out certs/ --node n1=10.0.0.1 --node n2=10.0.0.2,n2.example.org

writes ``certs/ca.pem`` and ``ca-key.pem`` (made once; later runs reuse them, so a
new node can be given a certificate from the same CA), and per node ``NODE.pem`` and
``NODE-key.pem`` whose subjectAltName holds the node id and every host given (IP
addresses as IP entries), usable as both server and client certificate (mutual TLS).
Keys are ECDSA P-256 and written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Annotated, Optional

import typer

from .common import EXIT_USAGE, _fail

#: Validity of the certificates made (a test cluster's; production has its own PKI).
CA_DAYS = 3650
NODE_DAYS_DEFAULT = 825  # the CA/Browser Forum's former maximum for leaf certificates


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        _fail(EXIT_USAGE, "quorumkv certs needs the cryptography package: pip install 'quorumkv[certs]'")
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: str, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _san_entries(x509, hosts: list[str]):
    out = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def load_or_make_ca(out: str):
    x509, hashes, serialization, ec, _, NameOID = _crypto()
    cert_path, key_path = os.path.join(out, "ca.pem"), os.path.join(out, "ca-key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quorumkv local CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    return cert, key, True


def issue(out: str, ca_cert, ca_key, name: str, hosts: list[str], days: int) -> tuple[str, str]:
    x509, hashes, serialization, ec, EKU, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = _san_entries(x509, list(dict.fromkeys([name, *hosts])))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(out, f"{name}.pem"), os.path.join(out, f"{name}-key.pem")
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    return cert_path, key_path


def certs_command(
    out: Annotated[str, typer.Option("--out", help="Directory for ca.pem, ca-key.pem, NODE.pem, NODE-key.pem.")],
    node: Annotated[Optional[list[str]], typer.Option(
        "--node", help="NODE_ID=HOST[,HOST...]: a node certificate valid for these hosts/IPs (repeatable).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity of the node certificates.")] = NODE_DAYS_DEFAULT,
) -> None:
    """Make a local CA (once) and a certificate per node, for TLS and mutual TLS."""
    specs = []
    for item in node or []:
        name, sep, hosts = item.partition("=")
        if not sep or not name or not hosts or "/" in name or name.startswith("."):
            _fail(EXIT_USAGE, f"--node {item!r}: expected NODE_ID=HOST[,HOST...]")
        specs.append((name, [h.strip() for h in hosts.split(",") if h.strip()]))
    os.makedirs(out, exist_ok=True)
    ca_cert, ca_key, made = load_or_make_ca(out)
    print(f"{'made' if made else 'using'} CA {os.path.join(out, 'ca.pem')}")
    for name, hosts in specs:
        cert_path, key_path = issue(out, ca_cert, ca_key, name, hosts, days)
        print(f"{name}: {cert_path} {key_path} (valid for {', '.join([name, *hosts])})")
    if specs:
        print("in each node.toml: tls_cert, tls_key = the node's files, tls_ca = ca.pem; clients need ca.pem only")
