"""ISO 20022 benchmark: parse + validate + typed model, build, sign, verify, hostile input.

Run: .venv/bin/python ops/bench/iso20022.py
Prints one line per figure and ends with one JSON line. Figures are best-of-N medians (µs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from gateway.iso20022 import (
    AppHeader,
    CreditTransfer,
    MessageRejected,
    Money,
    OriginalRef,
    Pacs002,
    Pacs009,
    PvPTerms,
    TransactionStatus,
    build,
    header_for,
    parse,
    sign_envelope,
    verify_envelope,
)
from gateway.iso20022.xmlsafe import ENVELOPE_SCHEMA, schema

NOW = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC)
COND = hashlib.sha256(bytes(32)).hexdigest()


def _tx(n: int) -> CreditTransfer:
    return CreditTransfer(
        end_to_end_id=f"E2E-{n}",
        uetr=f"{n:08x}-0000-4000-8000-000000000000",
        amount=Money(123_456_78 + n, "KZT"),
        settlement_date=NOW.date(),
        debtor_bic="CBAEAEAAXXX",
        debtor_account=f"wallet-cbuae-{n}",
        debtor_agent_bic="SWCBCHZZXXX",
        creditor_agent_bic="NBKZKZKAXXX",
        creditor_bic="HSBKKZKXXXX",
        creditor_account=f"wallet-hsbk-{n}",
        deadline=dt.time(12, 0, tzinfo=dt.UTC),
        pvp=PvPTerms("PVP-2025-0001", "DT", COND),
        instr_id=f"I-{n}",
    )


def _pacs009_message(n: int) -> tuple[Pacs009, AppHeader]:
    msg = Pacs009(f"MSG-{n}", NOW, tuple(_tx(i) for i in range(1, n + 1)))
    return msg, header_for(msg, from_bic="SWCBCHZZXXX", to_bic="NBKZKZKAXXX", created=NOW)


def _pacs009(n: int) -> bytes:
    return build(*_pacs009_message(n))


def _pacs002() -> Pacs002:
    ref = OriginalRef("MSG-1", "pacs.009.001.08", "E2E-1", "00000001-0000-4000-8000-000000000000")
    return Pacs002("ST-1", NOW, (TransactionStatus(ref, "ACSP"),))


def _keys() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1))
        .not_valid_after(dt.datetime(2040, 1, 1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM)


def measure(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean time per call, in µs."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def _refuse(data: bytes) -> Callable[[], object]:
    def run() -> object:
        try:
            parse(data, now=NOW)
        except MessageRejected as exc:
            return exc.code
        raise AssertionError("hostile input accepted")

    return run


def main() -> None:
    single = _pacs009(1)
    batch = _pacs009(100)
    env_schema = schema(ENVELOPE_SCHEMA)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)

    def raw_validate(data: bytes) -> Callable[[], object]:
        return lambda: env_schema(etree.fromstring(data, parser))

    key, cert = _keys()
    signed = sign_envelope(single, key, cert)
    p002 = _pacs002()
    message, header = _pacs009_message(1)
    keys = SimpleNamespace(key_pem=key, cert_pem=cert)

    res = {
        "pacs009_single_us": measure(lambda: parse(single, now=NOW), 5000),
        "pacs009_batch100_us_per_tx": measure(lambda: parse(batch, now=NOW), 100) / 100,
        "lxml_raw_validate_us": measure(raw_validate(single), 5000),
        "lxml_raw_validate_batch100_us_per_tx": measure(raw_validate(batch), 100) / 100,
        "pacs002_build_us": measure(lambda: build(p002), 5000),
        "pacs009_build_signed_us": measure(lambda: build(message, header, signer=keys), 500),
        "sign_us": measure(lambda: sign_envelope(single, key, cert), 200),
        "verify_us": measure(lambda: verify_envelope(signed, cert), 200),
    }
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {c} "{("&" + p + ";") * 10}">'.encode()
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + b"]><l>&i;</l>"
    )
    hostile = {
        "xxe": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
        "billion_laughs": bomb,
        "external_dtd": b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://example.com/x.dtd"><d/>',
        "body_10mb": b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>",
        "nesting_10000": b"<a>" * 10_000 + b"</a>" * 10_000,
        "invalid_utf8": single.replace(b"E2E-1", b"E2E-\xff"),
        "wrong_namespace": single.replace(b"pacs.009.001.08", b"pacs.009.001.07"),
    }
    hostile_us = {name: measure(_refuse(data), 200, 5) for name, data in hostile.items()}

    print(f"pacs.009 1 tx parse+validate+model      {res['pacs009_single_us']:8.1f} µs")
    print(f"raw lxml parse+validate (same bytes)    {res['lxml_raw_validate_us']:8.1f} µs")
    ratio = res["pacs009_single_us"] / res["lxml_raw_validate_us"]
    print(f"  ratio to raw lxml                     {ratio:8.2f} x")
    print(f"pacs.009 100 tx, per transaction        {res['pacs009_batch100_us_per_tx']:8.1f} µs")
    raw100 = res["lxml_raw_validate_batch100_us_per_tx"]
    print(f"raw lxml 100 tx, per transaction        {raw100:8.1f} µs")
    print(f"pacs.002 build (validated)              {res['pacs002_build_us']:8.1f} µs")
    signed_us = res["pacs009_build_signed_us"]
    print(f"pacs.009 build + sign (the builder)     {signed_us:8.1f} µs")
    print(f"sign envelope bytes (ECDSA P-256)       {res['sign_us']:8.1f} µs")
    print(f"verify envelope                         {res['verify_us']:8.1f} µs")
    for name, us in hostile_us.items():
        print(f"hostile {name:<31} {us:8.1f} µs (refused)")
    names = [
        "pacs009_single_us",
        "pacs009_batch100_us_per_tx",
        "lxml_raw_validate_us",
        "pacs002_build_us",
        "pacs009_build_signed_us",
        "sign_us",
        "verify_us",
    ]
    print(
        json.dumps(
            {k: round(res[k], 1) for k in names}
            | {"hostile_us": {k: round(v, 1) for k, v in hostile_us.items()}}
        )
    )


if __name__ == "__main__":
    main()
