"""CBPR+-shaped messages built with lxml directly (not with the gateway's builder), and
hypothesis strategies that fill in the optional elements CBPR+ allows and we ignore.

Each strategy draws a :class:`Drawn`: the envelope's bytes and the values the PvP needs,
so a test can check both that the message is accepted and that what was read is what was
sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from lxml import etree

from gateway.iso20022 import PVP_NS
from gateway.iso20022.xmlsafe import ENVELOPE_NS, HEAD_NS, ISO_NS_PREFIX
from tests.support.iso20022_samples import CONNECTOR_BIC, GATEWAY_BIC, NOW

# The CBPR+ character sets: FIN X (restricted) for identifiers, the extended set for names.
FINX = "0-9a-zA-Z/\\-?:().,'+ "
finx35 = st.from_regex(f"[{FINX}]{{1,35}}", fullmatch=True)
finx16 = st.from_regex(f"[{FINX}]{{1,16}}", fullmatch=True)
_NO_SLASH = "0-9a-zA-Z\\-?:().,'+ "
account_ids = st.from_regex(
    f"[{_NO_SLASH}]([{_NO_SLASH}]{{0,10}}(/[{_NO_SLASH}])?){{0,3}}", fullmatch=True
).filter(lambda s: len(s) <= 34)
extended = st.from_regex(
    "[0-9a-zA-Z/\\-?:().,'+ !#$%&*=^_`{|}~\";<>@\\[\\\\\\]]{1,35}", fullmatch=True
)
bics = st.from_regex(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?", fullmatch=True)
leis = st.from_regex(r"[A-Z0-9]{18}[0-9]{2}", fullmatch=True)
ibans = st.from_regex(r"[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}", fullmatch=True)
uetrs = st.uuids(version=4).map(str)
codes = st.from_regex(r"[A-Z0-9]{4}", fullmatch=True)
currencies = st.sampled_from(["KZT", "AED", "CNY", "TRY", "USD", "EUR", "SAR", "HKD", "THB"])
SECRET = bytes(range(32))
CONDITION = hashlib.sha256(SECRET).hexdigest()


def offset_time(when: datetime) -> str:
    """CBPR+ date-times carry a numeric offset (``+00:00``, never ``Z``)."""
    return when.isoformat(timespec="seconds")


class Doc:
    """Elements of one ISO 20022 namespace."""

    def __init__(self, message_id: str) -> None:
        self.ns = ISO_NS_PREFIX + message_id

    def __call__(self, parent: Any, name: str, text: str | None = None, **attrib: str) -> Any:
        tag = f"{{{self.ns}}}{name}"
        el = etree.Element(tag, attrib) if parent is None else etree.SubElement(parent, tag, attrib)
        if text is not None:
            el.text = text
        return el


@dataclass
class Drawn:
    raw: bytes
    expect: dict[str, Any] = field(default_factory=dict)


def envelope(message_id: str, document: Any, msg_id: str, extras: dict[str, Any]) -> bytes:
    """BizMsg = a CBPR+ AppHdr (with the optional elements in ``extras``) + ``document``."""
    env = etree.Element(f"{{{ENVELOPE_NS}}}BizMsg", nsmap={None: ENVELOPE_NS})
    h = etree.SubElement(env, f"{{{HEAD_NS}}}AppHdr", nsmap={None: HEAD_NS})

    def sub(parent: Any, name: str, text: str | None = None) -> Any:
        el = etree.SubElement(parent, f"{{{HEAD_NS}}}{name}")
        el.text = text
        return el

    if extras.get("charset"):
        sub(h, "CharSet", "UTF-8")
    for party, bic in (("Fr", extras["from"]), ("To", extras["to"])):
        fin = sub(sub(sub(h, party), "FIId"), "FinInstnId")
        sub(fin, "BICFI", bic)
        if extras.get("lei"):
            sub(fin, "LEI", extras["lei"])
    sub(h, "BizMsgIdr", msg_id)
    sub(h, "MsgDefIdr", message_id)
    sub(h, "BizSvc", extras.get("biz_svc", "swift.cbprplus.02"))
    if extras.get("market_practice"):
        mp = sub(h, "MktPrctc")
        sub(mp, "Regy", "www.swift.com")
        sub(mp, "Id", "swift.cbprplus.02")
    sub(h, "CreDt", offset_time(extras["created"]))
    if extras.get("copy"):
        sub(h, "CpyDplct", "DUPL")
    if extras.get("possible_duplicate") is not None:
        sub(h, "PssblDplct", "true" if extras["possible_duplicate"] else "false")
    if extras.get("priority"):
        sub(h, "Prty", "NORM")
    if extras.get("related"):
        rltd = sub(h, "Rltd")
        for party, bic in (("Fr", extras["to"]), ("To", extras["from"])):
            sub(sub(sub(sub(rltd, party), "FIId"), "FinInstnId"), "BICFI", bic)
        sub(rltd, "BizMsgIdr", "REL/1")
        sub(rltd, "MsgDefIdr", "pacs.009.001.08")
        sub(rltd, "BizSvc", "swift.cbprplus.02")
        sub(rltd, "CreDt", offset_time(extras["created"]))
    env.append(document)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


@st.composite
def header_extras(draw: st.DrawFn, created: datetime) -> dict[str, Any]:
    return {
        "from": CONNECTOR_BIC,
        "to": GATEWAY_BIC,
        "created": created,
        "charset": draw(st.booleans()),
        "lei": draw(st.none() | leis),
        "biz_svc": draw(st.sampled_from(["swift.cbprplus.02", "swift.cbprplus.03"])),
        "market_practice": draw(st.booleans()),
        "copy": draw(st.booleans()),
        "possible_duplicate": draw(st.none() | st.booleans()),
        "priority": draw(st.booleans()),
        "related": draw(st.booleans()),
    }


def fin_instn(d: Doc, parent: Any, name: str, bic: str | None, draw: st.DrawFn) -> Any:
    """A BranchAndFinancialInstitutionIdentification6 as CBPR+ allows it."""
    fin = d(d(parent, name), "FinInstnId")
    if bic is not None:
        d(fin, "BICFI", bic)
    if draw(st.booleans()):
        member = d(fin, "ClrSysMmbId")
        d(d(member, "ClrSysId"), "Cd", draw(st.sampled_from(["USABA", "GBDSC", "CHBCC"])))
        d(member, "MmbId", draw(st.from_regex(r"[0-9]{5,9}", fullmatch=True)))
    if draw(st.booleans()):
        d(fin, "LEI", draw(leis))
    if bic is None or draw(st.booleans()):
        d(fin, "Nm", draw(extended))
        if draw(st.booleans()):
            adr = d(fin, "PstlAdr")
            d(adr, "StrtNm", draw(extended))
            d(adr, "TwnNm", draw(extended))
            d(adr, "Ctry", draw(st.from_regex(r"[A-Z]{2}", fullmatch=True)))
    return fin


def account(d: Doc, parent: Any, name: str, wallet: str | None, draw: st.DrawFn) -> None:
    acct = d(parent, name)
    ident = d(acct, "Id")
    if wallet is None:
        d(ident, "IBAN", draw(ibans))
    else:
        other = d(ident, "Othr")
        d(other, "Id", wallet)
        if draw(st.booleans()):
            d(d(other, "SchmeNm"), "Prtry", "DTWALLET")
    if draw(st.booleans()):
        d(d(acct, "Tp"), "Cd", "CACC")
    if draw(st.booleans()):
        d(acct, "Ccy", "KZT")


def pvp_lock(d: Doc, parent: Any, pvp_id: str, leg: str, fulfilment: str | None = None) -> None:
    env = d(d(parent, "SplmtryData"), "Envlp")
    lock = etree.SubElement(env, f"{{{PVP_NS}}}PvPLock", nsmap={None: PVP_NS})
    values = [("PvPId", pvp_id), ("Leg", leg), ("Cond", CONDITION)]
    if fulfilment is not None:
        values.append(("Flfmt", fulfilment))
    for name, value in values:
        etree.SubElement(lock, f"{{{PVP_NS}}}{name}").text = value


@st.composite
def cbpr_pacs009(draw: st.DrawFn) -> Drawn:
    """A pacs.009 (CBPR+ core: one transaction) with our PvP terms."""
    d = Doc("pacs.009.001.08")
    created = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    msg_id = draw(finx35)
    doc, root = _document(d, "FICdtTrf")
    grp = d(root, "GrpHdr")
    d(grp, "MsgId", msg_id)
    d(grp, "CreDtTm", offset_time(created))
    d(grp, "NbOfTxs", "1")
    sttlm = d(grp, "SttlmInf")
    d(sttlm, "SttlmMtd", draw(st.sampled_from(["INDA", "INGA"])))
    if draw(st.booleans()):
        account(d, sttlm, "SttlmAcct", draw(st.none() | account_ids), draw)
    tx = d(root, "CdtTrfTxInf")
    pmt = d(tx, "PmtId")
    expect: dict[str, Any] = {"msg_id": msg_id, "created": created}
    expect["instr_id"] = draw(finx16)
    expect["end_to_end_id"] = draw(finx35)
    expect["tx_id"] = draw(st.none() | finx35)
    expect["uetr"] = draw(uetrs)
    d(pmt, "InstrId", expect["instr_id"])
    d(pmt, "EndToEndId", expect["end_to_end_id"])
    if expect["tx_id"] is not None:
        d(pmt, "TxId", expect["tx_id"])
    d(pmt, "UETR", expect["uetr"])
    if draw(st.booleans()):
        d(pmt, "ClrSysRef", draw(finx35))
    if draw(st.booleans()):
        info = d(tx, "PmtTpInf")
        if draw(st.booleans()):
            d(info, "InstrPrty", "NORM")
        d(d(info, "SvcLvl"), "Cd", "G004")
        if draw(st.booleans()):
            d(d(info, "CtgyPurp"), "Cd", "INTC")
    minor = draw(st.integers(1, 10**12))
    ccy = draw(currencies)
    expect["amount"] = (minor, ccy)
    d(tx, "IntrBkSttlmAmt", f"{minor // 100}.{minor % 100:02d}", Ccy=ccy)
    d(tx, "IntrBkSttlmDt", created.date().isoformat())
    if draw(st.booleans()):
        d(tx, "SttlmPrty", draw(st.sampled_from(["URGT", "HIGH", "NORM"])))
    if draw(st.booleans()):
        d(d(tx, "SttlmTmIndctn"), "DbtDtTm", offset_time(created))
    expect["deadline"] = None
    times = draw(st.sets(st.sampled_from(["CLSTm", "TillTm", "FrTm", "RjctTm"])))
    if times:
        req = d(tx, "SttlmTmReq")
        for name in ("CLSTm", "TillTm", "FrTm", "RjctTm"):
            if name in times:
                d(req, name, "12:00:00+00:00")
        if "TillTm" in times:
            expect["deadline"] = "12:00:00+00:00"
    for name in ("PrvsInstgAgt1", "InstgAgt", "InstdAgt", "IntrmyAgt1"):
        if name in ("InstgAgt", "InstdAgt") or draw(st.booleans()):
            fin_instn(d, tx, name, draw(bics), draw)
            if name == "IntrmyAgt1" and draw(st.booleans()):
                account(d, tx, "IntrmyAgt1Acct", draw(st.none() | account_ids), draw)
    for name in ("debtor_bic", "debtor_agent_bic", "creditor_agent_bic", "creditor_bic"):
        expect[name] = draw(bics)
    expect["debtor_account"] = draw(account_ids)
    expect["creditor_account"] = draw(account_ids)
    fin_instn(d, tx, "Dbtr", expect["debtor_bic"], draw)
    account(d, tx, "DbtrAcct", expect["debtor_account"], draw)
    fin_instn(d, tx, "DbtrAgt", expect["debtor_agent_bic"], draw)
    if draw(st.booleans()):
        account(d, tx, "DbtrAgtAcct", draw(st.none() | account_ids), draw)
    fin_instn(d, tx, "CdtrAgt", expect["creditor_agent_bic"], draw)
    if draw(st.booleans()):
        account(d, tx, "CdtrAgtAcct", draw(st.none() | account_ids), draw)
    fin_instn(d, tx, "Cdtr", expect["creditor_bic"], draw)
    account(d, tx, "CdtrAcct", expect["creditor_account"], draw)
    if draw(st.booleans()):
        d(d(tx, "InstrForCdtrAgt"), "InstrInf", draw(finx35))
    if draw(st.booleans()):
        d(d(tx, "InstrForNxtAgt"), "InstrInf", draw(finx35))
    if draw(st.booleans()):
        d(d(tx, "Purp"), "Cd", "INTC")
    if draw(st.booleans()):
        d(d(tx, "RmtInf"), "Ustrd", draw(extended))
    expect["pvp"] = (draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}", fullmatch=True)), "DT")
    pvp_lock(d, tx, *expect["pvp"])
    raw = envelope("pacs.009.001.08", doc, msg_id, draw(header_extras(created)))
    return Drawn(raw, expect)


def _original(d: Doc, parent: Any, draw: st.DrawFn, e2e: bool = True) -> dict[str, Any]:
    grp = d(parent, "OrgnlGrpInf")
    ref = {"msg_id": draw(finx35), "uetr": draw(uetrs), "end_to_end_id": None}
    d(grp, "OrgnlMsgId", ref["msg_id"])
    d(grp, "OrgnlMsgNmId", "pacs.009.001.08")
    if draw(st.booleans()):
        d(grp, "OrgnlCreDtTm", offset_time(NOW - timedelta(hours=1)))
    if draw(st.booleans()):
        d(parent, "OrgnlInstrId", draw(finx16))
    if e2e or draw(st.booleans()):
        ref["end_to_end_id"] = draw(finx35)
        d(parent, "OrgnlEndToEndId", ref["end_to_end_id"])
    if draw(st.booleans()):
        d(parent, "OrgnlTxId", draw(finx35))
    d(parent, "OrgnlUETR", ref["uetr"])
    return ref


def _original_tx_ref(d: Doc, parent: Any, draw: st.DrawFn) -> None:
    ref = d(parent, "OrgnlTxRef")
    d(ref, "IntrBkSttlmAmt", "100.00", Ccy=draw(st.sampled_from(["KZT", "GBP", "JPY"])))
    d(ref, "IntrBkSttlmDt", NOW.date().isoformat())
    fin_instn(d, d(ref, "Dbtr"), "Agt", draw(bics), draw)
    fin_instn(d, d(ref, "Cdtr"), "Agt", draw(bics), draw)


def _reason(d: Doc, parent: Any, name: str, code: str | None, draw: st.DrawFn) -> None:
    rsn = d(parent, name)
    if draw(st.booleans()):
        d(rsn, "Orgtr").append(etree.Element(f"{{{d.ns}}}Nm"))
        rsn[0][0].text = draw(extended)
    if code is not None:
        d(d(rsn, "Rsn"), "Cd", code)
    for _ in range(draw(st.integers(0, 2))):
        d(rsn, "AddtlInf", draw(finx35))


def _group_header(d: Doc, root: Any, msg_id: str, created: datetime, draw: st.DrawFn) -> None:
    grp = d(root, "GrpHdr")
    d(grp, "MsgId", msg_id)
    d(grp, "CreDtTm", offset_time(created))
    if draw(st.booleans()):
        fin_instn(d, grp, "InstgAgt", CONNECTOR_BIC, draw)
        fin_instn(d, grp, "InstdAgt", GATEWAY_BIC, draw)


def _document(d: Doc, root_name: str) -> tuple[Any, Any]:
    doc = etree.Element(f"{{{d.ns}}}Document", nsmap={None: d.ns})
    return doc, d(doc, root_name)


@st.composite
def cbpr_pacs002(draw: st.DrawFn) -> Drawn:
    d = Doc("pacs.002.001.10")
    created = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    msg_id = draw(finx35)
    doc, root = _document(d, "FIToFIPmtStsRpt")
    _group_header(d, root, msg_id, created, draw)
    tx = d(root, "TxInfAndSts")
    if draw(st.booleans()):
        d(tx, "StsId", draw(finx35))
    ref = _original(d, tx, draw)
    status = draw(st.sampled_from(["ACSP", "ACSC", "RJCT"]))
    d(tx, "TxSts", status)
    code = draw(codes) if status == "RJCT" else None
    if code is not None or draw(st.booleans()):
        _reason(d, tx, "StsRsnInf", code, draw)
    if draw(st.booleans()):
        d(tx, "AccptncDtTm", offset_time(created))
    if draw(st.booleans()):
        d(d(tx, "FctvIntrBkSttlmDt"), "Dt", NOW.date().isoformat())
    if draw(st.booleans()):
        fin_instn(d, tx, "InstgAgt", CONNECTOR_BIC, draw)
        fin_instn(d, tx, "InstdAgt", GATEWAY_BIC, draw)
    if draw(st.booleans()):
        _original_tx_ref(d, tx, draw)
    fulfil = status == "ACSC"
    if fulfil:
        pvp_lock(d, tx, "PVP-1", "DT", SECRET.hex())
    raw = envelope("pacs.002.001.10", doc, msg_id, draw(header_extras(created)))
    return Drawn(raw, {"msg_id": msg_id, "status": status, "reason": code, **ref})


@st.composite
def cbpr_pacs028(draw: st.DrawFn) -> Drawn:
    d = Doc("pacs.028.001.03")
    created = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    msg_id = draw(finx35)
    doc, root = _document(d, "FIToFIPmtStsReq")
    _group_header(d, root, msg_id, created, draw)
    tx = d(root, "TxInf")
    if draw(st.booleans()):
        d(tx, "StsReqId", draw(finx35))
    ref = _original(d, tx, draw, e2e=False)
    if draw(st.booleans()):
        d(tx, "ClrSysRef", draw(finx35))
    if draw(st.booleans()):
        fin_instn(d, tx, "InstgAgt", CONNECTOR_BIC, draw)
        fin_instn(d, tx, "InstdAgt", GATEWAY_BIC, draw)
    if draw(st.booleans()):
        _original_tx_ref(d, tx, draw)
    raw = envelope("pacs.028.001.03", doc, msg_id, draw(header_extras(created)))
    return Drawn(raw, {"msg_id": msg_id, **ref})


def _assignment(d: Doc, root: Any, asg_id: str, created: datetime, draw: st.DrawFn) -> None:
    asg = d(root, "Assgnmt")
    d(asg, "Id", asg_id)
    fin_instn(d, d(asg, "Assgnr"), "Agt", CONNECTOR_BIC, draw)
    fin_instn(d, d(asg, "Assgne"), "Agt", GATEWAY_BIC, draw)
    d(asg, "CreDtTm", offset_time(created))


def _case(d: Doc, parent: Any, name: str, draw: st.DrawFn) -> None:
    case = d(parent, name)
    d(case, "Id", draw(finx35))
    fin_instn(d, d(case, "Cretr"), "Agt", CONNECTOR_BIC, draw)


@st.composite
def cbpr_camt056(draw: st.DrawFn) -> Drawn:
    d = Doc("camt.056.001.08")
    created = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    asg_id = draw(finx35)
    doc, root = _document(d, "FIToFIPmtCxlReq")
    _assignment(d, root, asg_id, created, draw)
    if draw(st.booleans()):
        _case(d, root, "Case", draw)
    minor = draw(st.integers(1, 10**12))
    if draw(st.booleans()):
        ctrl = d(root, "CtrlData")
        d(ctrl, "NbOfTxs", "1")
    tx = d(d(root, "Undrlyg"), "TxInf")
    d(tx, "CxlId", draw(finx35))
    if draw(st.booleans()):
        _case(d, tx, "Case", draw)
    ref = _original(d, tx, draw)
    if draw(st.booleans()):
        d(tx, "OrgnlClrSysRef", draw(finx35))
    d(tx, "OrgnlIntrBkSttlmAmt", f"{minor // 100}.{minor % 100:02d}", Ccy="KZT")
    d(tx, "OrgnlIntrBkSttlmDt", NOW.date().isoformat())
    code = draw(st.sampled_from(["TMOT", "DUPL", "CUST"]))
    _reason(d, tx, "CxlRsnInf", code, draw)
    if draw(st.booleans()):
        _original_tx_ref(d, tx, draw)
    extras = draw(header_extras(created))
    raw = envelope("camt.056.001.08", doc, asg_id, extras)
    return Drawn(raw, {"msg_id": asg_id, "amount": minor, "reason": code, **ref})


@st.composite
def cbpr_camt029(draw: st.DrawFn) -> Drawn:
    d = Doc("camt.029.001.09")
    created = NOW - timedelta(seconds=draw(st.integers(0, 3600)))
    asg_id = draw(finx35)
    doc, root = _document(d, "RsltnOfInvstgtn")
    _assignment(d, root, asg_id, created, draw)
    if draw(st.booleans()):
        _case(d, root, "RslvdCase", draw)
    conf = draw(st.sampled_from(["CNCL", "RJCR"]))
    d(d(root, "Sts"), "Conf", conf)
    tx = d(d(root, "CxlDtls"), "TxInfAndSts")
    if draw(st.booleans()):
        d(tx, "CxlStsId", draw(finx35))
    ref = _original(d, tx, draw)
    d(tx, "TxCxlSts", "ACCR" if conf == "CNCL" else "RJCR")
    if conf == "RJCR":
        _reason(d, tx, "CxlStsRsnInf", "ARDT", draw)
    if draw(st.booleans()):
        d(tx, "OrgnlIntrBkSttlmAmt", "100.00", Ccy="KZT")
    if draw(st.booleans()):
        _original_tx_ref(d, tx, draw)
    raw = envelope("camt.029.001.09", doc, asg_id, draw(header_extras(created)))
    return Drawn(raw, {"msg_id": asg_id, "confirmation": conf, **ref})


cbpr_messages = st.one_of(
    cbpr_pacs009(), cbpr_pacs002(), cbpr_pacs028(), cbpr_camt056(), cbpr_camt029()
)
