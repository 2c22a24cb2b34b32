"""The keys and the unsigned envelope the signature tests share: a connector's EC key and
certificate, an impostor's, an RSA one, and a pacs.009 from the connector to the gateway,
built but not signed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.iso20022 import build, header_for
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW, pacs009


@dataclass(frozen=True)
class Pair:
    """A private key and its self-signed certificate, both PEM."""

    key: bytes
    cert: bytes


def _pair(kind: str, name: str) -> Pair:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA256())
    )
    return Pair(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


CONNECTOR = _pair("ec", "connector")
OTHER = _pair("ec", "impostor")
RSA = _pair("rsa", "connector-rsa")
MESSAGE = pacs009()
UNSIGNED = build(
    MESSAGE, header_for(MESSAGE, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
)
