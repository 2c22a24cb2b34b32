"""Typed models -> ISO 20022 XML text (bytes, validation and signing in
:mod:`gateway.iso20022.codec`).

Writers follow the usage guidelines' element order exactly; a writer never decides anything,
it only renders the model. They render text, not an lxml tree: element by element through
lxml cost ~60 µs for a pacs.009 with its header, the text ~13 µs (the codec then parses it
once, to validate it). The text is written in canonical form (exclusive XML C14N: no
declaration, each default namespace declared where it starts, ``<a></a>`` never ``<a/>``,
C14N's escapes), so the digest of a signature over it is the digest of the text itself;
``tests/unit/iso20022`` holds this against lxml's C14N for every message type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time

from gateway.iso20022.amounts import sum_iso, to_iso_amount
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    Money,
    OriginalRef,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    PvPTerms,
)
from gateway.iso20022.xmlsafe import ENVELOPE_NS, HEAD_NS, ISO_NS_PREFIX, PVP_NS


def fmt_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ISO 20022 date-times must be timezone-aware")
    return value.astimezone(UTC).isoformat()


def fmt_time(value: time) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ISO 20022 times must be timezone-aware")
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        raise ValueError("time offsets must be whole minutes")
    return value.isoformat()


def fmt_date(value: date) -> str:
    return value.isoformat()


# Characters that text content cannot carry as they are: C14N's escapes, and what XML 1.0
# does not admit at all (lxml refused those too: "All strings must be XML compatible").
_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: str) -> str:
    """``text`` as element content in canonical form; ValueError if XML cannot carry it."""
    if _SPECIAL.search(text) is None:  # also refuses a non-str (TypeError)
        return text
    if _NOT_XML.search(text) is not None:
        raise ValueError(
            "All strings must be XML compatible: Unicode or ASCII, no NULL bytes or "
            "control characters"
        )
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")
    )


def _el(tag: str, text: str) -> str:
    return f"<{tag}>{_x(text)}</{tag}>"


def _opt(tag: str, text: str | None) -> str:
    return "" if text is None else f"<{tag}>{_x(text)}</{tag}>"


def _agent(tag: str, bic: str) -> str:
    return f"<{tag}><FinInstnId><BICFI>{_x(bic)}</BICFI></FinInstnId></{tag}>"


def _money(tag: str, money: Money) -> str:
    amount = to_iso_amount(money.minor, money.currency)
    return f'<{tag} Ccy="{_x(money.currency)}">{amount}</{tag}>'


def _account(tag: str, account: str) -> str:
    return f"<{tag}><Id><Othr><Id>{_x(account)}</Id></Othr></Id></{tag}>"


def _original(ref: OriginalRef) -> str:
    return (
        f"<OrgnlGrpInf>{_el('OrgnlMsgId', ref.msg_id)}{_el('OrgnlMsgNmId', ref.msg_name_id)}"
        f"</OrgnlGrpInf>{_opt('OrgnlInstrId', ref.instr_id)}"
        f"{_opt('OrgnlEndToEndId', ref.end_to_end_id)}{_opt('OrgnlTxId', ref.tx_id)}"
        f"{_el('OrgnlUETR', ref.uetr)}"
    )


def _reason(tag: str, code: str | None, info: str | None) -> str:
    if code is None:
        return ""
    return f"<{tag}><Rsn>{_el('Cd', code)}</Rsn>{_opt('AddtlInf', info)}</{tag}>"


def _pvp(terms: PvPTerms | None) -> str:
    if terms is None:
        return ""
    return (
        f'<SplmtryData><Envlp><PvPLock xmlns="{PVP_NS}">{_el("PvPId", terms.pvp_id)}'
        f"{_el('Leg', terms.leg)}{_el('Cond', terms.condition)}"
        f"{_opt('Flfmt', terms.fulfilment)}</PvPLock></Envlp></SplmtryData>"
    )


def _document(message_id: str, root_name: str, body: str) -> str:
    return (
        f'<Document xmlns="{ISO_NS_PREFIX}{message_id}"><{root_name}>{body}'
        f"</{root_name}></Document>"
    )


def _group_header(msg_id: str, created: datetime, amounts: list[Money] | None) -> str:
    """GrpHdr's opening and common fields; the caller closes it (pacs.009 adds SttlmInf)."""
    head = f"<GrpHdr>{_el('MsgId', msg_id)}<CreDtTm>{fmt_datetime(created)}</CreDtTm>"
    if amounts is None:
        return head
    total = sum_iso([m.minor for m in amounts])
    return f"{head}<NbOfTxs>{len(amounts)}</NbOfTxs><CtrlSum>{total}</CtrlSum>"


def _settled_group_header(msg: Pacs009 | Pacs004) -> str:
    """GrpHdr of a message that moves money: with its count, sum and settlement method."""
    head = _group_header(msg.msg_id, msg.created, [t.amount for t in msg.transactions])
    return f"{head}<SttlmInf>{_el('SttlmMtd', msg.settlement_method)}</SttlmInf></GrpHdr>"


def pacs009(msg: Pacs009) -> str:
    parts = [_settled_group_header(msg)]
    for t in msg.transactions:
        deadline = (
            ""
            if t.deadline is None
            else f"<SttlmTmReq><TillTm>{fmt_time(t.deadline)}</TillTm></SttlmTmReq>"
        )
        parts.append(
            f"<CdtTrfTxInf><PmtId>{_opt('InstrId', t.instr_id)}"
            f"{_el('EndToEndId', t.end_to_end_id)}{_opt('TxId', t.tx_id)}{_el('UETR', t.uetr)}"
            f"</PmtId>{_money('IntrBkSttlmAmt', t.amount)}"
            f"<IntrBkSttlmDt>{fmt_date(t.settlement_date)}</IntrBkSttlmDt>{deadline}"
            f"{_agent('Dbtr', t.debtor_bic)}{_account('DbtrAcct', t.debtor_account)}"
            f"{_agent('DbtrAgt', t.debtor_agent_bic)}{_agent('CdtrAgt', t.creditor_agent_bic)}"
            f"{_agent('Cdtr', t.creditor_bic)}{_account('CdtrAcct', t.creditor_account)}"
            f"{_pvp(t.pvp)}</CdtTrfTxInf>"
        )
    return _document(msg.MESSAGE_ID, "FICdtTrf", "".join(parts))


def pacs002(msg: Pacs002) -> str:
    parts = [_group_header(msg.msg_id, msg.created, None), "</GrpHdr>"]
    for t in msg.transactions:
        accepted = (
            "" if t.accepted is None else f"<AccptncDtTm>{fmt_datetime(t.accepted)}</AccptncDtTm>"
        )
        parts.append(
            f"<TxInfAndSts>{_opt('StsId', t.status_id)}{_original(t.original)}"
            f"{_el('TxSts', t.status)}{_reason('StsRsnInf', t.reason, t.additional_info)}"
            f"{accepted}{_pvp(t.pvp)}</TxInfAndSts>"
        )
    return _document(msg.MESSAGE_ID, "FIToFIPmtStsRpt", "".join(parts))


def pacs004(msg: Pacs004) -> str:
    parts = [_settled_group_header(msg)]
    for t in msg.transactions:
        parts.append(
            f"<TxInf>{_el('RtrId', t.return_id)}{_original(t.original)}"
            f"{_money('RtrdIntrBkSttlmAmt', t.amount)}"
            f"<IntrBkSttlmDt>{fmt_date(t.settlement_date)}</IntrBkSttlmDt>"
            f"{_reason('RtrRsnInf', t.reason, t.additional_info)}</TxInf>"
        )
    return _document(msg.MESSAGE_ID, "PmtRtr", "".join(parts))


def pacs028(msg: Pacs028) -> str:
    parts = [_group_header(msg.msg_id, msg.created, None), "</GrpHdr>"]
    for t in msg.transactions:
        parts.append(f"<TxInf>{_opt('StsReqId', t.request_id)}{_original(t.original)}</TxInf>")
    return _document(msg.MESSAGE_ID, "FIToFIPmtStsReq", "".join(parts))


def _assignment(msg: Camt056 | Camt029) -> str:
    return (
        f"<Assgnmt>{_el('Id', msg.assignment_id)}<Assgnr>{_agent('Agt', msg.assigner_bic)}"
        f"</Assgnr><Assgne>{_agent('Agt', msg.assignee_bic)}</Assgne>"
        f"<CreDtTm>{fmt_datetime(msg.created)}</CreDtTm></Assgnmt>"
    )


def camt056(msg: Camt056) -> str:
    total = sum_iso([t.amount.minor for t in msg.transactions])
    parts = [
        _assignment(msg),
        f"<CtrlData><NbOfTxs>{len(msg.transactions)}</NbOfTxs><CtrlSum>{total}</CtrlSum>"
        "</CtrlData><Undrlyg>",
    ]
    for t in msg.transactions:
        date_ = (
            ""
            if t.settlement_date is None
            else f"<OrgnlIntrBkSttlmDt>{fmt_date(t.settlement_date)}</OrgnlIntrBkSttlmDt>"
        )
        parts.append(
            f"<TxInf>{_el('CxlId', t.cancellation_id)}{_original(t.original)}"
            f"{_money('OrgnlIntrBkSttlmAmt', t.amount)}{date_}"
            f"{_reason('CxlRsnInf', t.reason, t.additional_info)}</TxInf>"
        )
    parts.append("</Undrlyg>")
    return _document(msg.MESSAGE_ID, "FIToFIPmtCxlReq", "".join(parts))


def camt029(msg: Camt029) -> str:
    parts = [
        _assignment(msg),
        f"<Sts>{_el('Conf', msg.confirmation)}</Sts><CxlDtls>",
    ]
    for t in msg.transactions:
        parts.append(
            f"<TxInfAndSts>{_opt('CxlStsId', t.status_id)}{_original(t.original)}"
            f"{_el('TxCxlSts', t.status)}{_reason('CxlStsRsnInf', t.reason, t.additional_info)}"
            "</TxInfAndSts>"
        )
    parts.append("</CxlDtls>")
    return _document(msg.MESSAGE_ID, "RsltnOfInvstgtn", "".join(parts))


def admi002(msg: Admi002) -> str:
    body = (
        f"<RltdRef>{_el('Ref', msg.related_ref)}</RltdRef><Rsn>"
        f"{_el('RjctgPtyRsn', msg.reason)}<RjctnDtTm>{fmt_datetime(msg.rejected)}</RjctnDtTm>"
        f"{_opt('ErrLctn', msg.error_location)}{_opt('RsnDesc', msg.description)}</Rsn>"
    )
    return _document(msg.MESSAGE_ID, msg.MESSAGE_ID, body)


def app_header_open(header: AppHeader) -> str:
    """AppHdr without its closing tag: a signature (``Sgntr``) comes last, then the close."""
    duplicate = ""
    if header.possible_duplicate is not None:
        duplicate = f"<PssblDplct>{'true' if header.possible_duplicate else 'false'}</PssblDplct>"
    return (
        f'<AppHdr xmlns="{HEAD_NS}"><Fr>{_agent("FIId", header.from_bic)}</Fr>'
        f"<To>{_agent('FIId', header.to_bic)}</To>{_el('BizMsgIdr', header.biz_msg_id)}"
        f"{_el('MsgDefIdr', header.msg_def_id)}{_opt('BizSvc', header.biz_svc)}"
        f"<CreDt>{fmt_datetime(header.created)}</CreDt>{duplicate}"
    )


ENVELOPE_OPEN = f'<BizMsg xmlns="{ENVELOPE_NS}">'
ENVELOPE_CLOSE = "</BizMsg>"
APPHDR_CLOSE = "</AppHdr>"


WRITERS: dict[str, Callable[..., str]] = {
    Pacs009.MESSAGE_ID: pacs009,
    Pacs002.MESSAGE_ID: pacs002,
    Pacs004.MESSAGE_ID: pacs004,
    Pacs028.MESSAGE_ID: pacs028,
    Camt056.MESSAGE_ID: camt056,
    Camt029.MESSAGE_ID: camt029,
    Admi002.MESSAGE_ID: admi002,
}
