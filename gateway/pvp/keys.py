"""The gateway's signing key and certificate for ISO 20022 envelopes.

Configured (``iso20022.signing_key_pem`` + ``signing_cert_pem``) in production. The embedded
default generates an EC P-256 key and a self-signed certificate under ``data_dir/iso20022`` on
first use and reuses them afterwards, so the certificate the connector pinned stays valid across
restarts. ``GET /iso20022/certificate`` publishes the certificate.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """The gateway's key and certificate (PEM): a :class:`gateway.iso20022.KeyPair`."""

    key_pem: bytes
    cert_pem: bytes


def generate(common_name: str) -> SigningIdentity:
    """A fresh EC P-256 key and a self-signed certificate valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return SigningIdentity(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


class Keyring:
    """Loads (or on first use creates) the signing identity, once, thread-safely."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._identity: SigningIdentity | None = None
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self.settings.data_dir / "iso20022"

    def identity(self) -> SigningIdentity:
        if self._identity is None:
            with self._lock:
                if self._identity is None:
                    self._identity = self._load()
        return self._identity

    def _load(self) -> SigningIdentity:
        iso = self.settings.iso20022
        if iso.signing_key_pem is not None and iso.signing_cert_pem:
            return SigningIdentity(
                iso.signing_key_pem.get_secret_value().encode(), iso.signing_cert_pem.encode()
            )
        key_path = self.directory / "gateway-key.pem"
        cert_path = self.directory / "gateway-cert.pem"
        if key_path.exists() and cert_path.exists():
            return SigningIdentity(key_path.read_bytes(), cert_path.read_bytes())
        identity = generate(self.settings.connector.gateway_bic)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(identity.key_pem)
        cert_path.write_bytes(identity.cert_pem)
        log.warning(
            "no iso20022.signing_key_pem configured: generated a development key and a "
            "self-signed certificate in %s (GET /iso20022/certificate)",
            self.directory,
        )
        return identity


__all__ = ["Keyring", "SigningIdentity", "generate"]
