"""The gateway side of PvP over real HTTP, against a fake connector, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from gateway.iso20022 import Camt029, Pacs002, Pacs028, parse
from gateway.messaging.outbox import outbox_t
from gateway.pvp.store import inbox_t
from tests.support.commits import commits_on_this_thread
from tests.support.inprocess_pvp import CONDITION, SECRET, InProcessPvP, Leg, funded, refusal, uetr


def _settled(w: InProcessPvP) -> Leg:
    """A funded DT leg of 250,000, locked and then settled (ACSP, then ACSC sent)."""
    funded(w)
    leg = Leg(uetr(), 250_000)
    w.post(w.pacs009(leg))
    w.connector.wait_status(leg.uetr, "ACSP")
    w.post(w.fulfil(leg))
    w.connector.wait_status(leg.uetr, "ACSC")
    return leg


def test_pacs009_locks_the_dt_leg_and_answers_acsp(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    r = world.post(world.pacs009(leg))
    assert r.status_code == 202, r.text
    ack = r.json()
    assert ack["duplicate"] is False and len(ack["sha256"]) == 64
    st = world.connector.wait_status(leg.uetr, "ACSP")
    assert st.original.msg_id == leg.msg_id
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    view = world.pvp(leg.uetr)
    assert view["legs"][0]["state"] == "locked"
    assert view["legs"][0]["condition"] == CONDITION
    dirs = [(m["direction"], m["msg_def_id"]) for m in view["messages"]]
    assert ("in", "pacs.009.001.08") in dirs and ("out", "pacs.002.001.10") in dirs


def test_insufficient_funds_is_rejected_am04_and_nothing_moves(world: InProcessPvP) -> None:
    funded(world, 100)
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    st = world.connector.wait_status(leg.uetr, "RJCT")
    assert st.reason == "AM04"
    assert world.balance("hsbk-dt") == (100, 0)
    assert world.balance("cbuae-dt") == (0, 0)
    assert world.leg_state(leg.uetr) == "rejected"


def test_fulfilment_settles_and_answers_acsc(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.post(world.fulfil(leg)).status_code == 202
    world.connector.wait_status(leg.uetr, "ACSC")
    assert world.balance("hsbk-dt") == (750_000, 0)
    assert world.balance("cbuae-dt") == (250_000, 0)
    view = world.pvp(leg.uetr)
    assert view["legs"][0]["state"] == "settled" and view["decision"] == "commit"


def test_re_sent_decisions_share_the_answer_still_waiting_in_the_outbox(
    world: InProcessPvP,
) -> None:
    leg = _settled(world)
    unsent = sa.select(sa.func.count()).where(outbox_t.c.sent_at.is_(None))

    def drained() -> bool:
        with world.engine.connect() as conn:
            return conn.execute(unsent).scalar_one() == 0

    world.connector.wait(drained)  # the ACSC's delivery is recorded
    world.connector.failures = 1_000_000  # the connector is down: answers stay queued
    for _ in range(3):  # the connector re-sends its decision, three times
        assert world.post(world.fulfil(leg)).status_code == 202

    def out_pacs002() -> list[dict[str, object]]:
        view = world.pvp(leg.uetr)
        processed = sa.select(sa.func.count()).where(inbox_t.c.processed_at.is_(None))
        with world.engine.connect() as conn:
            if conn.execute(processed).scalar_one():
                return []
        return [
            m
            for m in view["messages"]
            if m["direction"] == "out" and m["msg_def_id"] == "pacs.002.001.10"
        ]

    answers = world.connector.wait(out_pacs002)
    assert len(answers) == 3  # ACSP, ACSC, and one ACSC for the three copies
    world.connector.failures = 0
    world.connector.wait(lambda: len(world.connector.statuses(leg.uetr)) == 3, timeout=15)
    assert [s.status for s in world.connector.statuses(leg.uetr)] == ["ACSP", "ACSC", "ACSC"]
    assert world.balance("cbuae-dt") == (250_000, 0)


def test_wrong_fulfilment_is_rejected_ch16_and_the_leg_stays_locked(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    world.post(world.fulfil(leg, secret=b"\x01" * 32))
    st = world.connector.wait_status(leg.uetr, "RJCT")
    assert st.reason == "CH16"
    assert world.leg_state(leg.uetr) == "locked"
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    # the right one still settles
    world.post(world.fulfil(leg))
    world.connector.wait_status(leg.uetr, "ACSC")


def test_camt056_releases_a_locked_leg_cncl(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.post(world.camt056(leg)).status_code == 202
    reply = world.connector.wait(lambda: world.connector.messages(Camt029))[0]
    assert isinstance(reply, Camt029)
    assert reply.confirmation == "CNCL" and reply.transactions[0].original.uetr == leg.uetr
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    view = world.wait_state(leg.uetr, "released")
    assert view["decision"] == "abort"


def test_camt056_after_settlement_is_refused_rjcr(world: InProcessPvP) -> None:
    leg = _settled(world)
    world.post(world.camt056(leg))
    reply = world.connector.wait(lambda: world.connector.messages(Camt029))[0]
    assert reply.confirmation == "RJCR"
    assert reply.transactions[0].reason == "ARDT"
    assert world.balance("cbuae-dt") == (250_000, 0)


def test_camt056_before_pacs009_leaves_a_tombstone_and_the_late_pacs009_is_rejected(
    world: InProcessPvP,
) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000, msg_id="P9-never-seen")
    world.post(world.camt056(leg))
    reply = world.connector.wait(lambda: world.connector.messages(Camt029))[0]
    assert reply.confirmation == "CNCL"
    assert world.leg_state(leg.uetr) == "cancelled"
    assert world.post(world.pacs009(leg)).status_code == 202
    st = world.connector.wait_status(leg.uetr, "RJCT")
    assert st.reason == "DS02"
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    assert world.leg_state(leg.uetr) == "cancelled"


def test_duplicate_message_is_acknowledged_again_and_processed_once(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    raw = world.pacs009(leg)
    first = world.post(raw)
    second = world.post(raw)
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is True
    assert first.json()["sha256"] == second.json()["sha256"]
    world.connector.wait_status(leg.uetr, "ACSP")
    third = world.post(raw)
    assert third.json()["duplicate"] is True
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    world.runtime.recover_inbox(everything=True)
    assert len(world.connector.statuses(leg.uetr)) == 1


def test_same_msgid_other_bytes_is_refused_du01(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg, mid="P9-SAME"))
    other = Leg(uetr(), 1_000)
    admi = refusal(world.post(world.pacs009(other, mid="P9-SAME")))
    assert admi.reason == "DU01" and admi.related_ref == "P9-SAME"


def test_second_pacs009_for_a_known_uetr_is_refused_am05(world: InProcessPvP) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    admi = refusal(world.post(world.pacs009(leg)))
    assert admi.reason == "AM05"


def test_bad_signature_is_refused_ds0b(world: InProcessPvP) -> None:
    from gateway.pvp.keys import generate

    funded(world)
    leg = Leg(uetr(), 250_000)
    forged = world.envelope(
        parse(world.pacs009(leg), cert_pem=None).message, identity=generate("EVILXXXXXXX")
    )
    admi = refusal(world.post(forged))
    assert admi.reason == "DS0B"
    raw = world.pacs009(leg).replace(b">2500.00<", b">2600.00<")
    assert b">2600.00<" in raw
    assert refusal(world.post(raw)).reason == "DS0B"  # the signature is checked first
    assert world.balance("hsbk-dt") == (1_000_000, 0)


def test_hostile_xml_is_refused_ff01_and_no_balance_moves(world: InProcessPvP) -> None:
    funded(world)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><BizMsg>&b;</BizMsg>'
    )
    for junk in (bomb, b"not xml at all", b"<a>" * 100 + b"</a>" * 100):
        admi = refusal(world.post(junk))
        assert admi.reason == "FF01"
        assert admi.related_ref == "NONREF"
    assert world.balance("hsbk-dt") == (1_000_000, 0)


def test_pacs028_is_answered_with_the_status_at_every_stage(world: InProcessPvP) -> None:
    funded(world)
    unknown = Leg(uetr(), 1, msg_id="P9-unknown")
    world.post(world.pacs028(unknown))
    st = world.connector.wait_status(unknown.uetr, "RJCT")
    assert st.reason == "NARR"

    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    world.post(world.pacs028(leg))
    world.connector.wait(lambda: len(world.connector.statuses(leg.uetr)) == 2)
    assert [s.status for s in world.connector.statuses(leg.uetr)] == ["ACSP", "ACSP"]
    world.post(world.fulfil(leg))
    world.connector.wait_status(leg.uetr, "ACSC")
    world.post(world.pacs028(leg))
    world.connector.wait(
        lambda: (
            [s.status for s in world.connector.statuses(leg.uetr)][-1:] == ["ACSC"]
            and len(world.connector.statuses(leg.uetr)) == 4
        )
    )

    poor = Leg(uetr(), 10**9, e2e="E2E-poor")
    world.post(world.pacs009(poor))
    world.connector.wait_status(poor.uetr, "RJCT")
    world.post(world.pacs028(poor))
    world.connector.wait(lambda: len(world.connector.statuses(poor.uetr)) == 2)
    assert {s.reason for s in world.connector.statuses(poor.uetr)} == {"AM04"}

    gone = Leg(uetr(), 1_000, e2e="E2E-gone")
    world.post(world.pacs009(gone))
    world.connector.wait_status(gone.uetr, "ACSP")
    world.post(world.camt056(gone))
    world.wait_state(gone.uetr, "released")
    world.post(world.pacs028(gone))
    st = world.connector.wait_status(gone.uetr, "RJCT")
    assert st.reason == "DS02"


def test_a_lock_past_its_deadline_makes_the_gateway_ask_then_act_on_abort(
    world: InProcessPvP,
) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg, deadline_in=1.5))  # beyond the safety margin (0.5 s)
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.runtime.check_deadlines().asked == ()  # not yet due
    world.connector.wait(lambda: world.runtime.check_deadlines().asked, timeout=10)
    req = world.connector.wait(lambda: world.connector.messages(Pacs028))[0]
    assert isinstance(req, Pacs028) and req.transactions[0].original.uetr == leg.uetr
    # still locked: the gateway never releases on its own authority
    assert world.leg_state(leg.uetr) == "locked"
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    world.post(world.answer(leg, "RJCT", "TMOT"))
    world.wait_state(leg.uetr, "released")
    assert world.balance("hsbk-dt") == (1_000_000, 0)


def test_last_resort_alerts_and_waits_for_an_audited_operator_decision(
    world: InProcessPvP,
) -> None:
    funded(world)
    leg = Leg(uetr(), 250_000, pvp_id="PVP-STUCK")
    world.post(world.pacs009(leg, deadline_in=1.5))  # beyond the safety margin (0.5 s)
    world.connector.wait_status(leg.uetr, "ACSP")
    r = world.operator.post(
        "/v1/pvp/PVP-STUCK/resolve", json={"action": "release", "reason": "too early"}
    )
    assert r.status_code == 409, r.text  # not past the last-resort deadline yet
    world.connector.wait(lambda: world.runtime.check_deadlines().alerted, timeout=10)
    view = world.pvp("PVP-STUCK")
    assert view["legs"][0]["alert"] is True and view["legs"][0]["state"] == "locked"
    assert [leg_["uetr"] for leg_ in world.operator.get("/v1/pvp").json()] == [leg.uetr]
    bad = world.operator.post(
        "/v1/pvp/PVP-STUCK/resolve",
        json={"action": "commit", "reason": "connector ops said commit", "fulfilment": "00" * 32},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "CH16"
    r = world.operator.post(
        "/v1/pvp/PVP-STUCK/resolve",
        json={
            "action": "commit",
            "reason": "connector ops confirmed COMMIT",
            "fulfilment": SECRET.hex(),
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["legs"][0]["state"] == "settled" and body["legs"][0]["alert"] is False
    assert body["legs"][0]["resolved_by"].startswith("operator:")
    assert body["audit"][0]["action"] == "commit"
    assert body["audit"][0]["reason"] == "connector ops confirmed COMMIT"
    assert body["audit"][0]["actor_label"] == "pvp-tests"
    assert world.balance("cbuae-dt") == (250_000, 0)
    world.connector.wait_status(leg.uetr, "ACSC")


def test_multi_transaction_pacs009_locks_in_one_batch_and_a_failing_leg_spares_the_others(
    world: InProcessPvP,
) -> None:
    funded(world, 300_000)
    good1, poor, good2 = (
        Leg(uetr(), 100_000, e2e="E2E-a"),
        Leg(uetr(), 10**9, e2e="E2E-b"),
        Leg(uetr(), 100_000, e2e="E2E-c"),
    )
    world.post(world.pacs009(good1, poor, good2))
    reply = world.connector.wait(lambda: world.connector.messages(Pacs002))[0]
    assert isinstance(reply, Pacs002)
    assert [(t.original.uetr, t.status, t.reason) for t in reply.transactions] == [
        (good1.uetr, "ACSP", None),
        (poor.uetr, "RJCT", "AM04"),
        (good2.uetr, "ACSP", None),
    ]
    assert world.balance("hsbk-dt") == (300_000, 200_000)
    world.post(world.fulfil(good1, good2))
    reply2 = world.connector.wait(lambda: world.connector.messages(Pacs002)[1:])[0]
    assert [t.status for t in reply2.transactions] == ["ACSC", "ACSC"]
    assert world.balance("cbuae-dt") == (200_000, 0)


def test_replies_are_retried_when_the_connector_fails(world: InProcessPvP) -> None:
    funded(world)
    world.connector.failures = 3
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP", timeout=15)
    assert world.connector.attempts >= 4


def _instruction(
    instruction_id: str = "hsbk-2026-0001", account: str = "hsbk-dt"
) -> dict[str, object]:
    return {
        "instruction_id": instruction_id,
        "party_bic": "HSBKKZKX",
        "counterparty_bic": "EBILAEAD",
        "sell": {"currency": "KZT", "amount": 100_000, "account": account},
        "buy": {"currency": "AED", "amount": 800, "account": "HSBKKZKX"},
        "value_time": "2026-11-24T12:00:30Z",
    }


def test_a_participant_instruction_reaches_the_connector_and_follows_its_dt_leg(
    world: InProcessPvP,
) -> None:
    from gateway import auth

    funded(world)
    token = auth.create_key(world.engine, "participant", subject="hsbk-dt").token
    bank = world.client(token)
    r = bank.post("/v1/pvp", json=_instruction())
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "accepted"
    assert bank.post("/v1/pvp", json=_instruction()).status_code == 200  # idempotent replay
    changed = {**_instruction(), "sell": {"currency": "KZT", "amount": 1, "account": "hsbk-dt"}}
    assert bank.post("/v1/pvp", json=changed).json()["code"] == "DU01"
    got = world.connector.wait(lambda: [r for r in world.connector.received if r.json])
    assert got[0].path == "/v1/instructions"
    assert got[0].json == {**_instruction(), "value_time": "2026-11-24T12:00:30Z"}
    body = world.connector.wait(
        lambda: (
            (b := bank.get("/v1/pvp/hsbk-2026-0001").json())["instruction"]["state"] == "sent" and b
        )
    )
    assert body["legs"] == []
    # the connector matched it: the DT leg carries the instruction id as EndToEndId
    leg = Leg(uetr(), 100_000, e2e="hsbk-2026-0001", pvp_id="PVP-M1")
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    world.post(world.fulfil(leg))
    world.connector.wait_status(leg.uetr, "ACSC")
    view = bank.get("/v1/pvp/hsbk-2026-0001").json()
    assert view["instruction"]["state"] == "settled" and view["pvp_id"] == "PVP-M1"
    assert view["legs"][0]["state"] == "settled"
    assert bank.get("/v1/pvp/PVP-M1").json()["instruction"]["instruction_id"] == "hsbk-2026-0001"


def test_a_participant_cannot_sell_from_a_wallet_it_does_not_own(world: InProcessPvP) -> None:
    from gateway import auth

    funded(world)
    world.wallet("other-dt", fund=10)
    token = auth.create_key(world.engine, "participant", subject="hsbk-dt").token
    bank = world.client(token)
    r = bank.post("/v1/pvp", json=_instruction("steal-1", account="other-dt"))
    assert r.status_code == 403 and r.json()["code"] == "NOT_YOUR_WALLET"
    assert bank.post("/v1/pvp", json=_instruction("x-1", account="nowhere")).status_code == 403
    operator_try = world.operator.post("/v1/pvp", json=_instruction("op-1"))
    assert operator_try.status_code == 403
    # nor see someone else's PvP
    leg = Leg(uetr(), 1, debtor="other-dt", e2e="E2E-other", pvp_id="PVP-OTHER")
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    assert bank.get("/v1/pvp/PVP-OTHER").status_code == 404
    assert (
        world.client(auth.create_key(world.engine, "participant", subject="other-dt").token)
        .get("/v1/pvp/PVP-OTHER")
        .status_code
        == 200
    )


def test_the_gateway_publishes_the_certificate_it_signs_with(world: InProcessPvP) -> None:
    r = world.anonymous.get("/iso20022/certificate")
    assert r.status_code == 200
    assert r.content.startswith(b"-----BEGIN CERTIFICATE-----")
    assert r.content == world.runtime.keyring.identity().cert_pem
    assert (world.tmp / "data" / "iso20022" / "gateway-cert.pem").read_bytes() == r.content


def test_a_message_stored_but_not_processed_is_processed_on_recovery(world: InProcessPvP) -> None:
    """What a kill -9 between the 202 and the processing leaves: an inbox row, a received leg."""
    from gateway.pvp import service

    funded(world)
    leg = Leg(uetr(), 250_000)
    ack = service.receive_message(world.runtime.uow(), world.pacs009(leg), world.runtime.ctx)
    assert ack.duplicate is False
    assert world.leg_state(leg.uetr) == "received"
    assert world.pvp(leg.uetr)["legs"][0]["status"] == "PDNG"
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    assert world.runtime.recover_inbox(everything=True) == 1
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    assert world.runtime.recover_inbox(everything=True) == 0


def test_queued_messages_are_applied_in_one_transaction_and_a_failing_one_spares_the_rest(
    world: InProcessPvP,
) -> None:
    from gateway.pvp import service
    from gateway.pvp.store import inbox_t, message_t

    funded(world)
    legs = [Leg(uetr(), 100_000) for _ in range(4)]
    ctx = world.runtime.ctx
    queued: list[service.InboxItem] = []
    for leg in legs:
        queued += service.receive_messages(world.runtime.uow(), [world.pacs009(leg)], ctx).inbox
    assert len(queued) == 4

    # Two items, one commit (the dispatchers' own commits, on their threads, are not counted).
    with commits_on_this_thread(world.engine) as commits:
        processed = service.process_items(world.runtime.uow(), queued[:2], ctx)
    assert processed.applied == [True, True]
    assert processed.claimed == []  # queued for a dispatcher, which the caller wakes
    assert len(commits) == 1
    world.runtime.wake_dispatcher()
    for leg in legs[:2]:
        world.connector.wait_status(leg.uetr, "ACSP")

    # A stored message that no longer parses fails the batch; the worker then takes the
    # items one at a time: the other one is applied and answered, the failure is recorded.
    bad_id = queued[2][0]
    with world.engine.begin() as conn:
        conn.execute(message_t.update().where(message_t.c.id == bad_id).values(raw=b"<junk"))
    world.runtime.process_batch([(bad_id, None), queued[3]])
    world.connector.wait_status(legs[3].uetr, "ACSP")
    assert world.leg_state(legs[2].uetr) == "received"
    with world.engine.connect() as conn:
        row = conn.execute(inbox_t.select().where(inbox_t.c.message_id == bad_id)).one()
    assert row.processed_at is None and row.last_error
    assert world.balance("hsbk-dt") == (1_000_000, 300_000)


def test_envelopes_received_together_share_one_transaction_and_a_refused_one_spares_the_rest(
    world: InProcessPvP,
) -> None:
    from gateway.iso20022 import MessageRejected
    from gateway.pvp import service
    from gateway.pvp.keys import generate

    funded(world)
    first, second, third = (Leg(uetr(), 100_000) for _ in range(3))
    forged = world.envelope(
        parse(world.pacs009(second), cert_pem=None).message, identity=generate("EVILXXXXXXX")
    )
    good = world.pacs009(first, mid="P9-BATCH")
    raws = [
        good,
        forged,
        world.pacs009(third),
        world.pacs009(Leg(uetr(), 5), mid="P9-BATCH"),  # its id again, other bytes: DU01
        good,  # the same bytes again: acknowledged as a duplicate
        world.pacs009(first),  # a UETR already instructed (by the first): AM05
    ]
    with commits_on_this_thread(world.engine) as commits:
        got = service.receive_messages(world.runtime.uow(), raws, world.runtime.ctx)
    assert len(commits) == 1
    outcomes, queued = got.outcomes, got.inbox
    kinds = [o.code if isinstance(o, MessageRejected) else o.duplicate for o in outcomes]
    assert kinds == [False, "DS0B", False, "DU01", True, "AM05"]
    assert [m.id for _, m in queued if m is not None] == ["P9-BATCH", outcomes[2].msg_id]
    assert world.leg_state(first.uetr) == "received" and world.leg_state(third.uetr) == "received"
    assert world.runtime.recover_inbox(everything=True) == 2  # nothing else was stored
    world.connector.wait_status(third.uetr, "ACSP")
    assert world.balance("hsbk-dt") == (1_000_000, 200_000)


def test_concurrent_posts_are_each_answered_for_their_own_envelope(world: InProcessPvP) -> None:
    from concurrent.futures import ThreadPoolExecutor

    funded(world)
    legs = [Leg(uetr(), 10_000) for _ in range(24)]
    raws = [world.pacs009(leg) for leg in legs]
    raws[5] = raws[5].replace(b">100.00<", b">999.00<")  # tampered: refused alone
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(world.post, raws))
    for i, (raw, r) in enumerate(zip(raws, answers, strict=True)):
        if i == 5:
            assert refusal(r).reason == "DS0B"
            continue
        assert r.status_code == 202, r.text
        assert r.json()["msg_id"] == parse(raw, cert_pem=None).message.id
        assert r.json()["duplicate"] is False
    for i, leg in enumerate(legs):
        if i != 5:
            world.connector.wait_status(leg.uetr, "ACSP")
    assert world.balance("hsbk-dt") == (1_000_000, 230_000)


def test_the_iso20022_door_refuses_what_is_not_a_posted_xml_body(world: InProcessPvP) -> None:
    raw = world.pacs009(Leg(uetr(), 1))
    r = world.anonymous.post(
        "/iso20022/messages", content=raw, headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415 and r.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    r = world.anonymous.get("/iso20022/messages")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    too_big = b"<a>" + b"x" * (world.runtime.ctx.iso.max_message_bytes * 2) + b"</a>"
    r = world.anonymous.post(
        "/iso20022/messages", content=too_big, headers={"content-type": "application/xml"}
    )
    assert r.status_code == 413 and r.json()["code"] == "TOO_LARGE"
    doc = world.anonymous.get("/schema/openapi.json").json()["paths"]["/iso20022/messages"]
    assert set(doc) == {"post"}
    assert set(doc["post"]["responses"]) == {"202", "400", "405", "413", "415", "429"}
    assert world.runtime.recover_inbox(everything=True) == 0  # nothing was stored
