"""Typed, immutable views of the ISO 20022 messages the gateway uses.

Only what the usage guidelines (iso20022_schemas/README.md) admit is modelled. Amounts are
:class:`Money` (integer minor units + currency); date-times are timezone-aware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import date, datetime, time
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

from gateway.iso20022.amounts import exponent

TxStatus: TypeAlias = Literal["ACTC", "PDNG", "ACSP", "ACSC", "RJCT"]
SettlementMethod: TypeAlias = Literal["INDA", "INGA", "CLRG"]
InvestigationConfirmation: TypeAlias = Literal["CNCL", "RJCR", "PDCR"]
CancellationStatus: TypeAlias = Literal["ACCR", "RJCR", "PDCR"]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units (tiyn for KZT) of a settled currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        exponent(self.currency)  # refuses currencies the gateway does not settle


@dataclass(frozen=True, slots=True)
class PvPTerms:
    """The PvP lock terms in SplmtryData: condition = hex SHA-256 of the 32-byte fulfilment."""

    pvp_id: str
    leg: str
    condition: str
    fulfilment: str | None = None


@dataclass(frozen=True, slots=True)
class OriginalRef:
    """What a status, return or cancellation refers to (the original instruction)."""

    msg_id: str
    msg_name_id: str
    end_to_end_id: str | None
    uetr: str
    instr_id: str | None = None
    tx_id: str | None = None


@dataclass(frozen=True, slots=True)
class AppHeader:
    """head.001.001.02 business application header. ``biz_msg_id`` equals the document's id."""

    MESSAGE_ID: ClassVar[str] = "head.001.001.02"

    from_bic: str
    to_bic: str
    biz_msg_id: str
    msg_def_id: str
    created: datetime
    biz_svc: str | None = None
    possible_duplicate: bool | None = None


# --- pacs.009 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    """One PvP leg: move ``amount`` from the debtor wallet to the creditor wallet."""

    end_to_end_id: str
    uetr: str
    amount: Money
    settlement_date: date
    debtor_bic: str
    debtor_account: str
    debtor_agent_bic: str
    creditor_agent_bic: str
    creditor_bic: str
    creditor_account: str
    deadline: time | None = None
    """SttlmTmReq/TillTm on ``settlement_date`` (timezone-aware)."""
    pvp: PvPTerms | None = None
    instr_id: str | None = None
    tx_id: str | None = None

    @property
    def deadline_at(self) -> datetime | None:
        if self.deadline is None:
            return None
        return datetime.combine(self.settlement_date, self.deadline)


@dataclass(frozen=True, slots=True)
class Pacs009:
    MESSAGE_ID: ClassVar[str] = "pacs.009.001.08"

    msg_id: str
    created: datetime
    transactions: tuple[CreditTransfer, ...]
    settlement_method: SettlementMethod = "CLRG"

    @property
    def id(self) -> str:
        return self.msg_id


# --- pacs.002 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionStatus:
    original: OriginalRef
    status: TxStatus
    reason: str | None = None
    """ISO status reason code (StsRsnInf/Rsn/Cd), e.g. AM04; required with RJCT."""
    additional_info: str | None = None
    status_id: str | None = None
    accepted: datetime | None = None
    pvp: PvPTerms | None = None
    """Connector -> network: the terms with the fulfilment."""


@dataclass(frozen=True, slots=True)
class Pacs002:
    MESSAGE_ID: ClassVar[str] = "pacs.002.001.10"

    msg_id: str
    created: datetime
    transactions: tuple[TransactionStatus, ...]

    @property
    def id(self) -> str:
        return self.msg_id


# --- pacs.004 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentReturn:
    return_id: str
    original: OriginalRef
    amount: Money
    settlement_date: date
    reason: str | None = None
    additional_info: str | None = None


@dataclass(frozen=True, slots=True)
class Pacs004:
    MESSAGE_ID: ClassVar[str] = "pacs.004.001.09"

    msg_id: str
    created: datetime
    transactions: tuple[PaymentReturn, ...]
    settlement_method: SettlementMethod = "CLRG"

    @property
    def id(self) -> str:
        return self.msg_id


# --- pacs.028 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRequest:
    original: OriginalRef
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Pacs028:
    MESSAGE_ID: ClassVar[str] = "pacs.028.001.03"

    msg_id: str
    created: datetime
    transactions: tuple[StatusRequest, ...]

    @property
    def id(self) -> str:
        return self.msg_id


# --- camt.056 / camt.029 --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancellationRequest:
    cancellation_id: str
    original: OriginalRef
    amount: Money
    settlement_date: date | None = None
    reason: str | None = None
    additional_info: str | None = None


@dataclass(frozen=True, slots=True)
class Camt056:
    MESSAGE_ID: ClassVar[str] = "camt.056.001.08"

    assignment_id: str
    assigner_bic: str
    assignee_bic: str
    created: datetime
    transactions: tuple[CancellationRequest, ...]

    @property
    def id(self) -> str:
        return self.assignment_id


@dataclass(frozen=True, slots=True)
class CancellationResolution:
    original: OriginalRef
    status: CancellationStatus
    reason: str | None = None
    additional_info: str | None = None
    status_id: str | None = None


@dataclass(frozen=True, slots=True)
class Camt029:
    MESSAGE_ID: ClassVar[str] = "camt.029.001.09"

    assignment_id: str
    assigner_bic: str
    assignee_bic: str
    created: datetime
    confirmation: InvestigationConfirmation
    transactions: tuple[CancellationResolution, ...]

    @property
    def id(self) -> str:
        return self.assignment_id


# --- admi.002 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admi002:
    """Message reject. ``related_ref`` is the offending MsgId, or ``NONREF`` when unknown."""

    MESSAGE_ID: ClassVar[str] = "admi.002.001.01"

    related_ref: str
    reason: str
    rejected: datetime
    error_location: str | None = None
    description: str | None = None

    @property
    def id(self) -> str:
        return self.related_ref


Message: TypeAlias = Pacs009 | Pacs002 | Pacs004 | Pacs028 | Camt056 | Camt029 | Admi002


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A message that passed every layer. ``header`` is None for a bare Document."""

    header: AppHeader | None
    message: Message
    signed: bool = False

    @property
    def message_id(self) -> str:
        return self.message.MESSAGE_ID


_T = TypeVar("_T")


def trusted_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor for the readers: every field, in declaration order, set
    straight into its slot (no keyword handling, no ``__post_init__``).

    For values the schema and the reader have already checked only: the result equals what
    ``cls(*values)`` gives. About half the cost of the dataclass ``__init__`` of a frozen
    class, which goes through ``object.__setattr__`` field by field.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{n}": getattr(cls, n).__set__ for n in names})
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    source = f"def make({', '.join(names)}):\n    self = _new(_cls)\n{body}    return self\n"
    # Generated from the class's own field names (as dataclasses does for __init__).
    exec(source, namespace)  # noqa: S102
    make: Callable[..., _T] = namespace["make"]
    return make


__all__ = [
    "Admi002",
    "AppHeader",
    "Camt029",
    "Camt056",
    "CancellationRequest",
    "CancellationResolution",
    "CancellationStatus",
    "CreditTransfer",
    "InvestigationConfirmation",
    "Message",
    "Money",
    "OriginalRef",
    "Pacs002",
    "Pacs004",
    "Pacs009",
    "Pacs028",
    "ParsedMessage",
    "PaymentReturn",
    "PvPTerms",
    "SettlementMethod",
    "StatusRequest",
    "TransactionStatus",
    "TxStatus",
]
