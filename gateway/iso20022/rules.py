"""Business rules: what a schema cannot say. Each failure -> one ISO reason code + XPath.

Run after schema validation and typed mapping, in this order: header/document agreement,
counts and control sums, dates, amounts, PvP terms, duplicates within the message, then the
caller's duplicate hook (message id, then UETR). The first failure wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, runtime_checkable

from lxml import etree

from gateway.iso20022.amounts import iso_to_minor_any
from gateway.iso20022.errors import (
    AM05,
    AM10,
    AM12,
    AM18,
    CH16,
    CH21,
    DT01,
    DU01,
    AmountError,
    DuplicateMessage,
    MessageRejected,
)
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    CreditTransfer,
    Message,
    Money,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    PaymentReturn,
    PvPTerms,
)
from gateway.iso20022.read import group_counts


@runtime_checkable
class DuplicateCheck(Protocol):
    """The caller's memory of messages already processed (the PvP layer backs it with the DB).

    Each method answers True when the id was already processed. An implementation may record
    the id as it answers, or leave recording to the store's unique constraint.
    """

    def message_seen(self, sender: str | None, msg_def_id: str, msg_id: str) -> bool: ...

    def uetr_seen(self, uetr: str) -> bool: ...


@dataclass
class InMemoryDuplicateCheck:
    """Records on first sight; for tests and the connector mock."""

    messages: set[tuple[str | None, str, str]] = field(default_factory=set)
    uetrs: set[str] = field(default_factory=set)

    def message_seen(self, sender: str | None, msg_def_id: str, msg_id: str) -> bool:
        key = (sender, msg_def_id, msg_id)
        if key in self.messages:
            return True
        self.messages.add(key)
        return False

    def uetr_seen(self, uetr: str) -> bool:
        if uetr in self.uetrs:
            return True
        self.uetrs.add(uetr)
        return False


@dataclass(frozen=True, slots=True)
class RuleLimits:
    max_transactions: int = 1000
    max_clock_skew: timedelta = timedelta(minutes=5)
    max_settlement_days: int = 30


# Local-name paths of each message's parts, for the XPath in a rejection.
_ROOT = {
    Pacs009.MESSAGE_ID: ("FICdtTrf", "GrpHdr", "CdtTrfTxInf"),
    Pacs002.MESSAGE_ID: ("FIToFIPmtStsRpt", "GrpHdr", "TxInfAndSts"),
    Pacs004.MESSAGE_ID: ("PmtRtr", "GrpHdr", "TxInf"),
    Pacs028.MESSAGE_ID: ("FIToFIPmtStsReq", "GrpHdr", "TxInf"),
    Camt056.MESSAGE_ID: ("FIToFIPmtCxlReq", "CtrlData", "Undrlyg/TxInf"),
    Camt029.MESSAGE_ID: ("RsltnOfInvstgtn", "Assgnmt", "CxlDtls/TxInfAndSts"),
    Admi002.MESSAGE_ID: ("admi.002.001.01", "Rsn", "Rsn"),
}


class _Paths:
    def __init__(self, base: str, message_id: str) -> None:
        root, self.grp_name, self.tx_name = _ROOT[message_id]
        self.doc = f"{base}/Document/{root}"

    def grp(self, leaf: str) -> str:
        return f"{self.doc}/{self.grp_name}/{leaf}"

    def tx(self, index: int, leaf: str) -> str:
        return f"{self.doc}/{self.tx_name}[{index + 1}]/{leaf}"


# Built once: (enveloped, message id) -> paths.
_PATHS: dict[tuple[bool, str], _Paths] = {
    (enveloped, mid): _Paths("/BizMsg" if enveloped else "", mid)
    for enveloped in (True, False)
    for mid in _ROOT
}
_ONE_DAY = timedelta(days=1)
_DAYS: dict[int, timedelta] = {}


def _settlement_window(created: datetime, days: int) -> tuple[date, date] | None:
    """Settlement dates a message created at ``created`` may carry: from the day before its UTC
    creation date to ``days`` after. UTC, so that the answer does not depend on the offset the
    sender wrote (a re-serialised message must get the same verdict). None when the calendar
    runs out (a creation date at the edge of year 1 or 9999)."""
    try:
        day0 = created.astimezone(UTC).date()
        return day0 - _ONE_DAY, day0 + _days(days)
    except OverflowError:
        return None


def _days(n: int) -> timedelta:
    span = _DAYS.get(n)
    if span is None:
        span = _DAYS[n] = timedelta(days=n)
    return span


def check(
    header: AppHeader | None,
    message: Message,
    document: etree._Element,
    *,
    enveloped: bool,
    limits: RuleLimits,
    now: datetime,
    seen: DuplicateCheck | None,
    counts: tuple[str | None, str | None] | None = None,
) -> None:
    if type(message) is Pacs009:
        check_pacs009(header, message, document, enveloped, limits, now, seen, counts)
        return
    msg_id = message.id
    base = "/BizMsg" if enveloped else ""
    p = _PATHS[(bool(enveloped), message.MESSAGE_ID)]

    def reject(code: str, detail: str, xpath: str) -> MessageRejected:
        return MessageRejected(code, detail, xpath=xpath, msg_id=msg_id)

    if header is not None:
        _check_header(header, message, base, reject)

    txs = message.transactions if not isinstance(message, Admi002) else ()
    if len(txs) > limits.max_transactions:
        raise reject(AM18, f"{len(txs)} transactions, at most {limits.max_transactions}", p.doc)
    nb, ctrl = group_counts(document) if counts is None else counts
    if nb is not None and int(nb) != len(txs):
        raise reject(AM18, f"NbOfTxs is {nb} but the message has {len(txs)}", p.grp("NbOfTxs"))
    amounts = _amounts(message)
    if ctrl is not None:
        try:
            declared = iso_to_minor_any(ctrl)
        except AmountError as exc:
            raise reject(AM10, exc.detail, p.grp("CtrlSum")) from None
        if declared != sum([m.minor for m in amounts]):
            raise reject(AM10, f"CtrlSum {ctrl} is not the sum of the amounts", p.grp("CtrlSum"))
    for i, money in enumerate(amounts):
        if money.minor <= 0:
            raise reject(AM12, "amounts must be positive", p.tx(i, "Amt"))

    _check_dates(header, message, base, p, limits, now, reject)
    _check_terms(message, p, reject)

    uetrs = [t.uetr for t in message.transactions] if isinstance(message, Pacs009) else []
    if len(set(uetrs)) != len(uetrs):
        dup = next(i for i, u in enumerate(uetrs) if uetrs.index(u) != i)
        raise reject(AM05, f"UETR {uetrs[dup]} appears twice", p.tx(dup, "PmtId/UETR"))

    if seen is None or isinstance(message, Admi002):
        return
    _check_seen(seen, header, message, msg_id, uetrs, base, p)


def _check_seen(
    seen: DuplicateCheck,
    header: AppHeader | None,
    message: Message,
    msg_id: str,
    uetrs: list[str],
    base: str,
    p: _Paths,
) -> None:
    sender = header.from_bic if header is not None else None
    if seen.message_seen(sender, message.MESSAGE_ID, msg_id):
        xpath = f"{base}/AppHdr/BizMsgIdr" if header is not None else p.grp("MsgId")
        raise DuplicateMessage(
            DU01, f"message id {msg_id} already received", xpath=xpath, msg_id=msg_id
        )
    for i, uetr in enumerate(uetrs):
        if seen.uetr_seen(uetr):
            raise DuplicateMessage(
                AM05, f"UETR {uetr} already instructed", xpath=p.tx(i, "PmtId/UETR"), msg_id=msg_id
            )


_PACS009 = Pacs009.MESSAGE_ID


def check_pacs009(
    header: AppHeader | None,
    message: Pacs009,
    document: etree._Element,
    enveloped: bool,
    limits: RuleLimits,
    now: datetime,
    seen: DuplicateCheck | None,
    counts: tuple[str | None, str | None] | None,
) -> None:
    """:func:`check` for pacs.009 (the hot message): the same rules, in the same order, with
    the same codes and XPaths; one pass over the transactions collects what the amount, PvP
    and UETR rules need (the pass itself cannot fail, so only the order of raising matters).
    """
    msg_id = message.msg_id
    base = "/BizMsg" if enveloped else ""
    p = _PATHS[(enveloped, _PACS009)]
    if header is not None:
        if header.msg_def_id != _PACS009:
            raise MessageRejected(
                CH16,
                f"MsgDefIdr {header.msg_def_id} but the document is {_PACS009}",
                xpath=f"{base}/AppHdr/MsgDefIdr",
                msg_id=msg_id,
            )
        if header.biz_msg_id != msg_id:
            raise MessageRejected(
                CH16,
                "BizMsgIdr differs from the document's message id",
                xpath=f"{base}/AppHdr/BizMsgIdr",
                msg_id=msg_id,
            )
    txs = message.transactions
    n = len(txs)
    if n > limits.max_transactions:
        raise MessageRejected(
            AM18, f"{n} transactions, at most {limits.max_transactions}", xpath=p.doc, msg_id=msg_id
        )
    nb, ctrl = group_counts(document) if counts is None else counts
    if nb is not None and int(nb) != n:
        raise MessageRejected(
            AM18,
            f"NbOfTxs is {nb} but the message has {n}",
            xpath=p.grp("NbOfTxs"),
            msg_id=msg_id,
        )
    total = 0
    not_positive = fulfilled = -1
    uetrs: list[str] = []
    for i, t in enumerate(txs):
        minor = t.amount.minor
        total += minor
        if minor <= 0 and not_positive < 0:
            not_positive = i
        terms = t.pvp
        if terms is not None and terms.fulfilment is not None and fulfilled < 0:
            fulfilled = i
        uetrs.append(t.uetr)
    if ctrl is not None:
        try:
            declared = iso_to_minor_any(ctrl)
        except AmountError as exc:
            raise MessageRejected(AM10, exc.detail, xpath=p.grp("CtrlSum"), msg_id=msg_id) from None
        if declared != total:
            raise MessageRejected(
                AM10,
                f"CtrlSum {ctrl} is not the sum of the amounts",
                xpath=p.grp("CtrlSum"),
                msg_id=msg_id,
            )
    if not_positive >= 0:
        raise MessageRejected(
            AM12, "amounts must be positive", xpath=p.tx(not_positive, "Amt"), msg_id=msg_id
        )
    latest = now + limits.max_clock_skew
    created = message.created
    if created > latest:
        raise MessageRejected(
            DT01, "creation date-time is in the future", xpath=p.grp("CreDtTm"), msg_id=msg_id
        )
    if header is not None and header.created > latest:
        raise MessageRejected(
            DT01, "header CreDt is in the future", xpath=f"{base}/AppHdr/CreDt", msg_id=msg_id
        )
    window = _settlement_window(created, limits.max_settlement_days)
    if window is None:
        raise MessageRejected(
            DT01, "creation date-time is out of range", xpath=p.grp("CreDtTm"), msg_id=msg_id
        )
    first, last = window
    for i, t in enumerate(txs):
        day = t.settlement_date
        if not first <= day <= last:
            raise MessageRejected(
                DT01,
                f"settlement date {day} is outside [{first}, {last}]",
                xpath=p.tx(i, "IntrBkSttlmDt"),
                msg_id=msg_id,
            )
    if fulfilled >= 0:
        raise MessageRejected(
            CH16,
            "an instruction never carries the fulfilment",
            xpath=p.tx(fulfilled, "SplmtryData/Envlp/PvPLock/Flfmt"),
            msg_id=msg_id,
        )
    if n > 1 and len(set(uetrs)) != n:
        dup = next(i for i, u in enumerate(uetrs) if uetrs.index(u) != i)
        raise MessageRejected(
            AM05, f"UETR {uetrs[dup]} appears twice", xpath=p.tx(dup, "PmtId/UETR"), msg_id=msg_id
        )
    if seen is not None:
        _check_seen(seen, header, message, msg_id, uetrs, base, p)


def _check_header(header: AppHeader, message: Message, base: str, reject: _Reject) -> None:
    if header.msg_def_id != message.MESSAGE_ID:
        raise reject(
            CH16,
            f"MsgDefIdr {header.msg_def_id} but the document is {message.MESSAGE_ID}",
            f"{base}/AppHdr/MsgDefIdr",
        )
    if not isinstance(message, Admi002) and header.biz_msg_id != message.id:
        raise reject(
            CH16, "BizMsgIdr differs from the document's message id", f"{base}/AppHdr/BizMsgIdr"
        )
    if isinstance(message, Camt056 | Camt029) and (
        header.from_bic != message.assigner_bic or header.to_bic != message.assignee_bic
    ):
        raise reject(
            CH16, "header Fr/To differ from the assignment's Assgnr/Assgne", f"{base}/AppHdr/Fr"
        )


class _Reject(Protocol):
    def __call__(self, code: str, detail: str, xpath: str) -> MessageRejected: ...


def _amounts(message: Message) -> list[Money]:
    if isinstance(message, Pacs009 | Pacs004 | Camt056):
        return [t.amount for t in message.transactions]
    return []


def _created_path(message: Message, p: _Paths) -> str:
    if isinstance(message, Camt056 | Camt029):
        return f"{p.doc}/Assgnmt/CreDtTm"
    if isinstance(message, Admi002):
        return f"{p.doc}/Rsn/RjctnDtTm"
    return p.grp("CreDtTm")


def _check_dates(
    header: AppHeader | None,
    message: Message,
    base: str,
    p: _Paths,
    limits: RuleLimits,
    now: datetime,
    reject: _Reject,
) -> None:
    latest = now + limits.max_clock_skew
    created = message.rejected if isinstance(message, Admi002) else message.created
    if created > latest:
        raise reject(DT01, "creation date-time is in the future", _created_path(message, p))
    if header is not None and header.created > latest:
        raise reject(DT01, "header CreDt is in the future", f"{base}/AppHdr/CreDt")
    if isinstance(message, Pacs009 | Pacs004):
        window = _settlement_window(created, limits.max_settlement_days)
        if window is None:
            raise reject(DT01, "creation date-time is out of range", _created_path(message, p))
        first, last = window
        txs: tuple[CreditTransfer | PaymentReturn, ...] = message.transactions
        for i, t in enumerate(txs):
            day: date = t.settlement_date
            if not first <= day <= last:
                raise reject(
                    DT01,
                    f"settlement date {day} is outside [{first}, {last}]",
                    p.tx(i, "IntrBkSttlmDt"),
                )


def _check_terms(message: Message, p: _Paths, reject: _Reject) -> None:
    if isinstance(message, Pacs002):
        for i, s in enumerate(message.transactions):
            if s.status == "RJCT" and s.reason is None:
                raise reject(CH21, "RJCT needs a reason code", p.tx(i, "StsRsnInf/Rsn/Cd"))
            _check_fulfilment(s.pvp, p.tx(i, "SplmtryData/Envlp/PvPLock/Flfmt"), reject)
    elif isinstance(message, Pacs009):
        for i, t in enumerate(message.transactions):
            if t.pvp is not None and t.pvp.fulfilment is not None:
                raise reject(
                    CH16,
                    "an instruction never carries the fulfilment",
                    p.tx(i, "SplmtryData/Envlp/PvPLock/Flfmt"),
                )


def _check_fulfilment(terms: PvPTerms | None, xpath: str, reject: _Reject) -> None:
    if terms is None or terms.fulfilment is None:
        return
    digest = hashlib.sha256(bytes.fromhex(terms.fulfilment)).hexdigest()
    if digest != terms.condition:
        raise reject(CH16, "SHA-256 of the fulfilment does not match the condition", xpath)


__all__ = ["DuplicateCheck", "InMemoryDuplicateCheck", "RuleLimits", "check", "check_pacs009"]
