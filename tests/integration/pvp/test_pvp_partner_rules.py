"""What a partner meets first at the gateway's door, over real HTTP on SQLite and PostgreSQL:
the signature before the content, a pacs.009 too late for its deadline, and the decision the
gateway applied to every leg, shown by ``GET /v1/pvp/{ref}``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from gateway.iso20022 import build, header_for, parse
from gateway.pvp.keys import generate
from gateway.pvp.store import leg_t, message_t
from tests.support.inprocess_pvp import (
    CONNECTOR_BIC,
    GATEWAY_BIC,
    SECRET,
    InProcessPvP,
    Leg,
    funded,
    refusal,
    uetr,
)


def _unsigned_with_content_errors(world: InProcessPvP, leg: Leg) -> bytes:
    """A pacs.009 envelope, unsigned, with a mandatory element missing, an element CBPR+ never
    admits and a control sum that is not the sum."""
    message = parse(world.pacs009(leg)).message
    raw = build(message, header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC))
    broken = raw.replace(b"<NbOfTxs>1</NbOfTxs>", b"").replace(
        b"</CdtrAcct>", b"</CdtrAcct><Bogus>x</Bogus>"
    )
    broken = broken.replace(b"<CtrlSum>2500.00</CtrlSum>", b"<CtrlSum>1.00</CtrlSum>")
    assert b"NbOfTxs" not in broken and b"Bogus" in broken and b"<CtrlSum>1.00<" in broken
    return broken


def _stored(world: InProcessPvP) -> tuple[int, int]:
    """(legs, messages stored as received) in the gateway's database."""
    with world.engine.connect() as conn:
        legs = conn.execute(sa.select(sa.func.count()).select_from(leg_t)).scalar_one()
        inbound = conn.execute(
            sa.select(sa.func.count()).where(message_t.c.direction == "in")
        ).scalar_one()
    return legs, inbound


def test_an_unsigned_envelope_full_of_content_errors_is_refused_ds0b_and_nothing_stored(
    world: InProcessPvP,
) -> None:
    funded(world)
    broken = _unsigned_with_content_errors(world, Leg(uetr(), 250_000))
    admi = refusal(world.post(broken))
    assert admi.reason == "DS0B"
    assert admi.error_location == "/BizMsg/AppHdr/Sgntr"
    assert _stored(world) == (0, 0)
    assert world.balance("hsbk-dt") == (1_000_000, 0)


def test_a_wrongly_signed_envelope_is_refused_ds0b_whatever_its_content(
    world: InProcessPvP,
) -> None:
    funded(world)
    broken = _unsigned_with_content_errors(world, Leg(uetr(), 250_000))
    impostor = generate(CONNECTOR_BIC)  # names the connector, signs with another key
    admi = refusal(world.post(world.sign(broken, impostor)))
    assert admi.reason == "DS0B"
    assert _stored(world) == (0, 0)


def test_a_validly_signed_envelope_with_content_errors_gets_its_content_code(
    world: InProcessPvP,
) -> None:
    funded(world)
    broken = _unsigned_with_content_errors(world, Leg(uetr(), 250_000))
    signed = world.sign(broken)
    admi = refusal(world.post(signed))
    assert admi.reason not in ("DS0B", "FF01")
    assert admi.reason in ("CH21", "CH17", "AM10")
    assert _stored(world) == (0, 0)


def test_a_sender_other_than_the_connector_is_refused_ds0b_even_with_its_key(
    world: InProcessPvP,
) -> None:
    """The certificate is the one pinned for the sender the header names: only the connector
    has one at the gateway."""
    funded(world)
    message = parse(world.pacs009(Leg(uetr(), 250_000))).message
    header = header_for(message, from_bic="EVILKZKAXXX", to_bic=GATEWAY_BIC)
    raw = world.sign(build(message, header))  # the connector's own key
    admi = refusal(world.post(raw))
    assert admi.reason == "DS0B"
    assert _stored(world) == (0, 0)


def test_a_pacs009_past_its_deadline_is_refused_tm01_and_moves_nothing(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000, pvp_id="PVP-LATE")
    r = world.post(world.pacs009(leg, deadline_in=-60, created_ago=120))
    assert r.status_code == 202, r.text
    st = world.connector.wait_status(leg.uetr, "RJCT")
    assert st.reason == "TM01"
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    assert world.balance("cbuae-dt") == (0, 0)
    view = world.pvp("PVP-LATE")
    assert view["decision"] == "abort"
    assert _decision(view) == ("rejected", "RJCT", "deadline", "TM01")
    assert world.connector.statuses(leg.uetr) == [st]  # no ACSP ever


def test_a_pacs009_whose_deadline_is_within_the_safety_margin_is_refused_tm01(
    world: InProcessPvP,
) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg, deadline_in=0.2))  # the margin is 0.5 s
    assert world.connector.wait_status(leg.uetr, "RJCT").reason == "TM01"
    assert world.balance("hsbk-dt") == (1_000_000, 0)


def _decision(view: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    leg = view["legs"][0]
    if leg["decision"] is not None:
        assert leg["decided_at"] is not None
    return leg["state"], leg["decision"], leg["decision_cause"], leg["reason"]


def test_every_leg_shows_the_decision_the_gateway_applied(world: InProcessPvP) -> None:
    funded(world, 2_000_000)
    committed, cancelled, refused, asked = (Leg(uetr(), 250_000) for _ in range(4))
    refused.amount = 5_000_000
    for i, leg in enumerate((committed, cancelled, refused, asked)):
        leg.pvp_id = f"PVP-D{i}"
    for leg in (committed, cancelled, asked):
        world.post(world.pacs009(leg, deadline_in=60 if leg is not asked else 1.5))
        world.connector.wait_status(leg.uetr, "ACSP")
        assert world.pvp(leg.uetr)["legs"][0]["decision"] is None  # locked: not decided
    world.post(world.pacs009(refused))
    world.connector.wait_status(refused.uetr, "RJCT")

    world.post(world.fulfil(committed))
    world.connector.wait_status(committed.uetr, "ACSC")
    world.post(world.camt056(cancelled))
    world.wait_state(cancelled.uetr, "released")
    world.post(world.camt056(refused))  # the connector cancels both legs of the aborted PvP
    world.connector.wait(lambda: world.runtime.check_deadlines().asked, timeout=10)
    world.post(world.answer(asked, "RJCT", "TMOT"))
    world.wait_state(asked.uetr, "released")

    shown = {leg.uetr: world.pvp(leg.uetr) for leg in (committed, cancelled, refused, asked)}
    assert _decision(shown[committed.uetr]) == ("settled", "COMMIT", "fulfilment", None)
    assert _decision(shown[cancelled.uetr]) == ("released", "ABORT", "camt.056", "DS02")
    assert _decision(shown[refused.uetr]) == ("rejected", "RJCT", "refusal", "AM04")
    assert _decision(shown[asked.uetr]) == ("released", "ABORT", "deadline", "DS02")
    assert [shown[leg.uetr]["decision"] for leg in (committed, cancelled, refused, asked)] == [
        "commit",
        "abort",
        "abort",
        "abort",
    ]


def test_a_camt056_before_the_pacs009_shows_an_abort(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000, pvp_id="PVP-EARLY", msg_id="P9-not-yet")
    world.post(world.camt056(leg))
    world.wait_state(leg.uetr, "cancelled")
    world.post(world.pacs009(leg))
    assert world.connector.wait_status(leg.uetr, "RJCT").reason == "DS02"
    view = world.pvp("PVP-EARLY")
    assert view["decision"] == "abort"
    assert _decision(view) == ("cancelled", "ABORT", "camt.056", "DS02")


def test_an_operator_decision_shows_as_such(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000, pvp_id="PVP-OPS")
    world.post(world.pacs009(leg, deadline_in=1.5))
    world.connector.wait_status(leg.uetr, "ACSP")
    world.connector.wait(lambda: world.runtime.check_deadlines().alerted, timeout=10)
    r = world.operator.post(
        "/v1/pvp/PVP-OPS/resolve",
        json={
            "action": "commit",
            "reason": "confirmed by the connector's operator",
            "fulfilment": SECRET.hex(),
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "commit"
    assert _decision(r.json()) == ("settled", "COMMIT", "operator", None)
