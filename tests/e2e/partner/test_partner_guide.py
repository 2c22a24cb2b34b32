"""The partner guide's example messages are the generator's output, byte for byte, and each
is a message the receiver accepts: it parses, validates and verifies against its sender's
(demonstration) certificate."""

from __future__ import annotations

from pathlib import Path

from gateway.connector.demo_identity import CONNECTOR_CERT_PEM, PARTNER_CERT_PEM
from gateway.connector.examples import CONNECTOR_BIC, blocks, examples, render
from gateway.iso20022 import parse

GUIDE = Path(__file__).parents[3] / "docs" / "partner-guide.md"


def test_the_guide_shows_every_generated_example_unchanged() -> None:
    text = GUIDE.read_text("utf-8")
    shown = blocks(text)
    generated = {e.name: e.xml for e in examples()}
    assert set(shown) == set(generated)
    for name, xml in generated.items():
        assert shown[name].rstrip("\n") == xml.rstrip("\n"), (
            f"{name} drifted: python -m gateway.connector.examples docs/partner-guide.md"
        )
    assert render(text) == text


def test_every_example_is_accepted_from_its_sender() -> None:
    for example in examples():
        cert = CONNECTOR_CERT_PEM if example.sender == CONNECTOR_BIC else PARTNER_CERT_PEM
        parsed = parse(example.xml.encode("utf-8"), cert_pem=cert)
        assert parsed.header is not None and parsed.header.from_bic == example.sender
        assert parsed.header.to_bic == example.receiver
