"""The connector's signing identity: configured, or a dev key + self-signed certificate made
on first start under ``<data_dir>/connector/`` and reused afterwards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def generate_identity(common_name: str) -> tuple[str, str]:
    """A fresh EC P-256 key and a self-signed certificate for it (PEM, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_or_create_identity(directory: Path, common_name: str) -> tuple[str, str]:
    """The dev identity in ``directory`` (created with mode 0600 on first use)."""
    key_path, cert_path = directory / "connector-key.pem", directory / "connector-cert.pem"
    if key_path.exists() and cert_path.exists():
        return key_path.read_text("ascii"), cert_path.read_text("ascii")
    directory.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem = generate_identity(common_name)
    key_path.touch(mode=0o600)
    key_path.write_text(key_pem, "ascii")
    cert_path.write_text(cert_pem, "ascii")
    return key_pem, cert_pem


__all__ = ["generate_identity", "load_or_create_identity"]
