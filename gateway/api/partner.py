"""Partner API: PvP. The connector's ISO 20022 door, participants' instructions, the operator's
last-resort decisions. Parse, call the PvP service, map to a schema; no logic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Response, asgi, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.types import HTTPScope, Receive, Send
from msgspec import Meta, Struct

from gateway.api.ratelimit import door_check, door_refused, scope_host
from gateway.auth import Principal, Role
from gateway.messaging import isodoor
from gateway.pvp import service
from gateway.pvp.model import DecisionKind, Instruction, InstructionState, Leg, Side
from gateway.pvp.runtime import PvPRuntime

IsoId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}$")]
Bic = Annotated[str, Meta(pattern=r"^[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?$")]
Minor = Annotated[
    int,
    Meta(
        gt=0,
        le=2**63 - 1,
        description=(
            "Integer minor units of the side's currency: tiyn for KZT (1 KZT = 100 tiyn), "
            "fils for AED; 150000 KZT is 1,500.00 KZT"
        ),
        examples=[150_000],
    ),
]
MinorOut = Annotated[
    int,
    Meta(description="Integer minor units of the currency (tiyn for KZT)", examples=[150_000]),
]


def _guard(*roles: Role) -> dict[str, Provide]:
    from gateway.api.deps import role_guard

    return {"principal": Provide(role_guard(*roles), sync_to_thread=False)}


def _runtime(state: State) -> PvPRuntime:
    runtime: PvPRuntime = state.pvp
    return runtime


# ------------------------------------------------------------------ schemas


class _In(Struct, forbid_unknown_fields=True):
    pass


class SideIn(_In):
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$")]
    amount: Minor
    account: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,33}$")]


class InstructionCreate(_In):
    instruction_id: IsoId
    party_bic: Bic
    counterparty_bic: Bic
    sell: SideIn
    buy: SideIn
    value_time: datetime


class ResolveCreate(_In):
    action: Literal["commit", "release"]
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]
    fulfilment: Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")] | None = None


class SideOut(Struct):
    currency: str
    amount: MinorOut
    account: str


class InstructionOut(Struct):
    instruction_id: str
    state: InstructionState
    party_bic: str
    counterparty_bic: str
    sell: SideOut
    buy: SideOut
    value_time: datetime
    created_at: datetime
    updated_at: datetime
    reason: str | None
    pvp_id: str | None
    uetr: str | None

    @classmethod
    def of(cls, i: Instruction) -> InstructionOut:
        return cls(
            instruction_id=i.instruction_id,
            state=i.state,
            party_bic=i.party_bic,
            counterparty_bic=i.counterparty_bic,
            sell=SideOut(i.sell.currency, i.sell.amount, i.sell.account),
            buy=SideOut(i.buy.currency, i.buy.amount, i.buy.account),
            value_time=i.value_time,
            created_at=i.created_at,
            updated_at=i.updated_at,
            reason=i.reason,
            pvp_id=i.pvp_id,
            uetr=i.uetr,
        )


class LegOut(Struct):
    uetr: str
    state: str
    status: str
    """The pacs.002 status the gateway would report: PDNG, ACSP, ACSC or RJCT."""
    reason: str | None
    pvp_id: str | None
    leg: str | None
    end_to_end_id: str | None
    amount: MinorOut | None
    currency: str | None
    debtor_account: str | None
    creditor_account: str | None
    condition: str | None
    deadline: datetime | None
    lock_id: str
    status_requests: int
    status_requested_at: datetime | None
    alert: bool
    alert_at: datetime | None
    resolved_by: str | None
    decision: Literal["COMMIT", "ABORT", "RJCT"] | None
    """What the gateway applied to the leg: COMMIT (lock committed), ABORT (released, or
    cancelled before it was locked), RJCT (the pacs.009 refused, nothing locked); null while
    the leg is open."""
    decision_cause: (
        Literal["fulfilment", "camt.056", "pacs.002", "deadline", "operator", "refusal"] | None
    )
    """What caused it: the connector's fulfilment, its camt.056, its unasked pacs.002 RJCT,
    the deadline (its RJCT to the gateway's status request, or a pacs.009 refused TM01), an
    operator, or the pacs.009's refusal (by the ledger or for its terms)."""
    decided_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, leg: Leg) -> LegOut:
        t = leg.terms
        d = leg.decision
        status, _ = leg.status()
        return cls(
            uetr=leg.uetr,
            state=leg.state.value,
            status=status,
            reason=leg.reason,
            pvp_id=t.pvp_id if t else None,
            leg=t.leg if t else None,
            end_to_end_id=t.end_to_end_id if t else None,
            amount=t.amount if t else None,
            currency=t.currency if t else None,
            debtor_account=t.debtor_account if t else None,
            creditor_account=t.creditor_account if t else None,
            condition=t.condition if t else None,
            deadline=t.deadline if t else None,
            lock_id=leg.lock_id,
            status_requests=leg.status_requests,
            status_requested_at=leg.status_requested_at,
            alert=leg.alert_at is not None,
            alert_at=leg.alert_at,
            resolved_by=leg.resolved_by,
            decision=d.kind.value if d else None,
            decision_cause=d.cause.value if d and d.cause else None,
            decided_at=d.at if d else None,
            created_at=leg.created_at,
            updated_at=leg.updated_at,
        )


class MessageOut(Struct):
    direction: str
    msg_def_id: str | None
    msg_id: str | None
    sha256: str
    at: datetime
    reason: str | None


class AuditOut(Struct):
    uetr: str
    action: str
    actor_key_id: str
    actor_label: str
    reason: str
    at: datetime


class PvPOut(Struct):
    ref: str
    pvp_id: str | None
    decision: Literal["commit", "abort"] | None
    """As far as the gateway knows, from the decisions it applied to its legs: a leg
    committed means the connector committed; a leg aborted or refused (the connector never
    commits a PvP one of whose legs was refused) that it aborted."""
    instruction: InstructionOut | None
    legs: list[LegOut]
    messages: list[MessageOut]
    audit: list[AuditOut]

    @classmethod
    def of(cls, v: service.PvPView) -> PvPOut:
        kinds = {leg.decision.kind for leg in v.legs if leg.decision is not None}
        decision: Literal["commit", "abort"] | None = None
        if DecisionKind.COMMIT in kinds:
            decision = "commit"
        elif kinds:
            decision = "abort"
        return cls(
            ref=v.ref,
            pvp_id=v.pvp_id,
            decision=decision,
            instruction=InstructionOut.of(v.instruction) if v.instruction else None,
            legs=[LegOut.of(leg) for leg in v.legs],
            messages=[
                MessageOut(m.direction, m.msg_def_id, m.msg_id, m.sha256, m.created_at, m.reason)
                for m in v.messages
            ],
            audit=[
                AuditOut(
                    str(a["uetr"]),
                    str(a["action"]),
                    str(a["actor_key_id"]),
                    str(a["actor_label"]),
                    str(a["reason"]),
                    a["at"],  # type: ignore[arg-type]
                )
                for a in v.audit
            ],
        )


# ------------------------------------------------------------------ controllers


@asgi(isodoor.PATH, copy_scope=False)
async def iso20022_messages(scope: HTTPScope, receive: Receive, send: Send) -> None:
    """``POST /iso20022/messages``: a signed envelope from the connector. 202 with the
    technical acknowledgement once it is stored (and, without a backlog, applied), 400 with
    a signed admi.002 when refused. A bare ASGI handler (see :mod:`gateway.messaging.isodoor`); the
    reception thread stores every envelope waiting at that moment in one transaction
    (``PvPRuntime.reception``). A refused post costs its sender's address a token of the door's
    rate limit; a message the pinned connector signed costs nothing (``ratelimit.door_*``)."""
    state = scope["app"].state
    rt: PvPRuntime = state.pvp
    host = scope_host(scope)
    door_check(state, host)  # 429 while this address's refusals are used up
    try:
        raw = await isodoor.read_xml_post(scope, receive, rt.ctx.iso.max_message_bytes * 2)
    except HTTPException:
        door_refused(state, host)
        raise
    if raw is None:
        return
    received = await rt.reception.submit(raw)
    if received.status >= 400:  # not a message the pinned connector signed
        door_refused(state, host)
    await isodoor.answer(send, received.status, received.media_type, received.body)


class Iso20022Controller(Controller):
    path = "/iso20022"
    tags = ["partner"]
    security = []

    @get(
        "/certificate",
        sync_to_thread=True,
        summary="The gateway's signing certificate (PEM), for the connector to pin",
        media_type="application/x-pem-file",
    )
    def certificate(self, state: State) -> bytes:
        return _runtime(state).keyring.identity().cert_pem


class PvPController(Controller):
    path = "/v1/pvp"
    tags = ["partner"]

    @post(
        "/",
        status_code=201,
        sync_to_thread=True,
        dependencies=_guard(Role.PARTICIPANT),
        summary="Instruct a PvP (sent to the connector for matching)",
        responses={200: ResponseSpec(InstructionOut, description="A replay of the instruction")},
    )
    def instruct(
        self,
        state: State,
        data: JSONBody[InstructionCreate],
        principal: NamedDependency[Principal],
    ) -> Response[InstructionOut]:
        rt = _runtime(state)
        inst = Instruction(
            instruction_id=data.instruction_id,
            subject=principal.subject,
            party_bic=data.party_bic,
            counterparty_bic=data.counterparty_bic,
            sell=Side(data.sell.currency, data.sell.amount, data.sell.account),
            buy=Side(data.buy.currency, data.buy.amount, data.buy.account),
            value_time=data.value_time,
            state=InstructionState.ACCEPTED,
            created_at=data.value_time,
            updated_at=data.value_time,
        )
        stored, created = rt.instruct(inst)
        return Response(InstructionOut.of(stored), status_code=201 if created else 200)

    @get(
        "/",
        sync_to_thread=True,
        dependencies=_guard(Role.OPERATOR),
        summary="Legs awaiting an operator decision (past the last-resort deadline)",
    )
    def alerts(self, state: State, principal: NamedDependency[Principal]) -> list[LegOut]:
        return [LegOut.of(leg) for leg in service.alerts(_runtime(state).uow())]

    @get(
        "/{ref:str}",
        sync_to_thread=True,
        dependencies=_guard(Role.OPERATOR, Role.PARTICIPANT),
        summary="A PvP by instruction id, PvP id or UETR: legs, instruction, message trail",
    )
    def get_pvp(
        self, state: State, ref: FromPath[str], principal: NamedDependency[Principal]
    ) -> PvPOut:
        v = service.view(
            _runtime(state).uow(),
            ref,
            subject=principal.subject,
            is_operator=principal.role is Role.OPERATOR,
        )
        return PvPOut.of(v)

    @post(
        "/{ref:str}/resolve",
        status_code=200,
        sync_to_thread=True,
        dependencies=_guard(Role.OPERATOR),
        summary="Operator decision on a leg past its last-resort deadline (audited)",
    )
    def resolve(
        self,
        state: State,
        ref: FromPath[str],
        data: JSONBody[ResolveCreate],
        principal: NamedDependency[Principal],
    ) -> PvPOut:
        rt = _runtime(state)
        rt.resolve(
            ref,
            data.action,
            data.reason,
            service.Actor(principal.key_id, principal.label),
            fulfilment=data.fulfilment,
        )
        return PvPOut.of(service.view(rt.uow(), ref, subject=None, is_operator=True))


ROUTES: list[Any] = [Iso20022Controller, iso20022_messages, PvPController]

__all__ = ["ROUTES"]
