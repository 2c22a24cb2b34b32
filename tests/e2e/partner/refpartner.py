"""A reference partner central bank, as a partner's engineer would write one from
``docs/partner-guide.md``: its own ledger of one currency, its own HTTP endpoint, and its
messages written and read with lxml and signed and verified with signxml. It uses nothing of
the ``gateway`` package. ``broken`` names faults to make on purpose (see :data:`FAULTS`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import queue
import threading
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier, methods

ENV = "urn:kz:dt-gateway:xsd:envelope.001.001.01"
HEAD = "urn:iso:std:iso:20022:tech:xsd:head.001.001.02"
PVP = "urn:kz:dt-gateway:xsd:pvp.001.001.01"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
DOC = {
    "pacs.002.001.10": "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10",
    "camt.029.001.09": "urn:iso:std:iso:20022:tech:xsd:camt.029.001.09",
    "admi.002.001.01": "urn:iso:std:iso:20022:tech:xsd:admi.002.001.01",
}
FAULTS = frozenset(
    {"accept_unsigned", "release_at_deadline", "cancel_settled", "lock_late", "any_fulfilment"}
)
"""accept_unsigned: no signature check; release_at_deadline: a lock past its TillTm is
released on its own; cancel_settled: a camt.056 after settlement is answered CNCL; lock_late:
a pacs.009 whose TillTm has passed is locked; any_fulfilment: a COMMIT settles whatever its
Flfmt."""
MARGIN = dt.timedelta(milliseconds=500)
"""A pacs.009 whose TillTm is this close, or past, is refused TM01: the lock could only wait
for the ABORT."""


def identity(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _id() -> str:
    return "REF" + uuid.uuid4().hex[:28]


def _bic(bic: str) -> str:
    return f"<FinInstnId><BICFI>{bic}</BICFI></FinInstnId>"


def _original(o: dict[str, str]) -> str:
    return (
        f"<OrgnlGrpInf><OrgnlMsgId>{escape(o['msg_id'])}</OrgnlMsgId>"
        f"<OrgnlMsgNmId>{escape(o['name'])}</OrgnlMsgNmId></OrgnlGrpInf>"
        f"<OrgnlEndToEndId>{escape(o['e2e'])}</OrgnlEndToEndId>"
        f"<OrgnlUETR>{o['uetr']}</OrgnlUETR>"
    )


@dataclass
class Leg:
    original: dict[str, str]
    account: str
    amount: int
    condition: str
    deadline: dt.datetime
    state: str  # locked | rejected | settled | released | cancelled
    reason: str | None = None


@dataclass
class ReferencePartner:
    bic: str
    connector_url: str
    accounts: dict[str, int]
    broken: frozenset[str] = frozenset()
    connector_bic: str = "SWHQBEBBXXX"
    key_pem: str = ""
    cert_pem: str = ""
    legs: dict[str, Leg] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        assert self.broken <= FAULTS
        self.key_pem, self.cert_pem = identity(f"reference partner {self.bic}")
        self._work: queue.Queue[etree._Element | None] = queue.Queue()
        self._connector_cert: str | None = None
        threading.Thread(target=self._worker, daemon=True).start()

    # --- the door ---------------------------------------------------------------------

    def receive(self, raw: bytes) -> tuple[int, bytes, str]:
        try:
            root = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            return 400, self._admi002("NONREF", "FF01", "not well-formed"), "application/xml"
        msg_id = root.findtext(f"{{{HEAD}}}AppHdr/{{{HEAD}}}BizMsgIdr") or "NONREF"
        if "accept_unsigned" not in self.broken and not self._verified(root):
            return 400, self._admi002(msg_id, "DS0B", "signature"), "application/xml"
        doc = root[1]
        sha = hashlib.sha256(raw).hexdigest()
        with self.lock:
            old = self.seen.get(msg_id)
            if old is not None and old != sha:
                return 400, self._admi002(msg_id, "DU01", "other content"), "application/xml"
            if old is None and doc[0].tag.endswith("FICdtTrf"):
                uetr = doc.findtext(".//{*}CdtTrfTxInf/{*}PmtId/{*}UETR")
                if uetr in self.legs and self.legs[uetr].state != "cancelled":
                    return 400, self._admi002(msg_id, "AM05", "UETR known"), "application/xml"
            self.seen[msg_id] = sha
        if old is None:
            self._work.put(doc)
        ack = {"msg_id": msg_id, "sha256": sha, "duplicate": old is not None}
        return 202, json.dumps(ack).encode(), "application/json"

    def _verified(self, root: etree._Element) -> bool:
        if self._connector_cert is None:
            with urllib.request.urlopen(self.connector_url + "/v1/certificate") as r:
                self._connector_cert = json.loads(r.read())["certificate_pem"]
        config = SignatureConfiguration(expect_references=1)
        try:
            XMLVerifier().verify(root, x509_cert=self._connector_cert, expect_config=config)
        except Exception:
            return False
        return True

    # --- processing -------------------------------------------------------------------

    def _worker(self) -> None:
        while (doc := self._work.get()) is not None:
            try:
                self._process(doc)
            except Exception as exc:  # the check sees the missing answer
                print("reference partner failed:", repr(exc))

    def _process(self, doc: etree._Element) -> None:
        if True:
            with self.lock:
                kind = etree.QName(doc[0]).localname
                if kind == "FICdtTrf":
                    self._on_pacs009(doc)
                elif kind == "FIToFIPmtStsRpt":
                    self._on_pacs002(doc)
                elif kind == "FIToFIPmtCxlReq":
                    self._on_camt056(doc)
                elif kind == "FIToFIPmtStsReq":
                    self._on_pacs028(doc)

    def _on_pacs009(self, doc: etree._Element) -> None:
        msg_id = doc.findtext("{*}FICdtTrf/{*}GrpHdr/{*}MsgId") or ""
        statuses = []
        for tx in doc.iterfind("{*}FICdtTrf/{*}CdtTrfTxInf"):
            uetr = tx.findtext("{*}PmtId/{*}UETR") or ""
            original = {
                "msg_id": msg_id,
                "name": "pacs.009.001.08",
                "e2e": tx.findtext("{*}PmtId/{*}EndToEndId") or "",
                "uetr": uetr,
            }
            account = tx.findtext("{*}DbtrAcct/{*}Id/{*}Othr/{*}Id") or ""
            amount = round(float(tx.findtext("{*}IntrBkSttlmAmt") or "0") * 100)
            day = tx.findtext("{*}IntrBkSttlmDt")
            till = tx.findtext("{*}SttlmTmReq/{*}TillTm")
            deadline = dt.datetime.fromisoformat(f"{day}T{till}")
            condition = tx.findtext(f".//{{{PVP}}}Cond") or ""
            known = self.legs.get(uetr)
            if known is not None and known.state == "cancelled":
                statuses.append((original, "RJCT", "DS02"))
                continue
            reason = None
            late = deadline - MARGIN <= dt.datetime.now(dt.UTC)
            if late and "lock_late" not in self.broken:
                reason = "TM01"
            elif account not in self.accounts:
                reason = "AC01"
            elif self.accounts[account] < amount:
                reason = "AM04"
            leg = Leg(original, account, amount, condition, deadline, "locked", reason)
            if reason is None:
                self.accounts[account] -= amount
            else:
                leg.state = "rejected"
            self.legs[uetr] = leg
            statuses.append((original, "ACSP" if reason is None else "RJCT", reason))
        self._pacs002(statuses)

    def _expire(self, leg: Leg) -> None:
        """The fault a partner must not make: release on its own after the deadline."""
        late = dt.datetime.now(dt.UTC) > leg.deadline
        if "release_at_deadline" in self.broken and leg.state == "locked" and late:
            leg.state = "released"
            self.accounts[leg.account] += leg.amount

    def _on_pacs002(self, doc: etree._Element) -> None:
        statuses = []
        for st in doc.iterfind("{*}FIToFIPmtStsRpt/{*}TxInfAndSts"):
            leg = self.legs.get(st.findtext("{*}OrgnlUETR") or "")
            flfmt = st.findtext(f".//{{{PVP}}}Flfmt")
            if leg is None or not flfmt:
                continue
            self._expire(leg)
            matches = hashlib.sha256(bytes.fromhex(flfmt)).hexdigest() == leg.condition
            if not matches and "any_fulfilment" not in self.broken:
                statuses.append((leg.original, "RJCT", "CH16"))
                continue
            if leg.state == "locked":
                leg.state = "settled"
            ok = leg.state == "settled"
            statuses.append((leg.original, "ACSC" if ok else "RJCT", None if ok else "DS02"))
        if statuses:
            self._pacs002(statuses)

    def _on_camt056(self, doc: etree._Element) -> None:
        for tx in doc.iterfind("{*}FIToFIPmtCxlReq/{*}Undrlyg/{*}TxInf"):
            uetr = tx.findtext("{*}OrgnlUETR") or ""
            leg = self.legs.get(uetr)
            if leg is None:
                original = {
                    "msg_id": tx.findtext("{*}OrgnlGrpInf/{*}OrgnlMsgId") or "",
                    "name": "pacs.009.001.08",
                    "e2e": tx.findtext("{*}OrgnlEndToEndId") or "",
                    "uetr": uetr,
                }
                leg = Leg(original, "", 0, "", dt.datetime.now(dt.UTC), "cancelled")
                self.legs[uetr] = leg
            refused = leg.state == "settled" and "cancel_settled" not in self.broken
            if leg.state == "locked":
                leg.state = "released"
                self.accounts[leg.account] += leg.amount
            self._camt029(leg.original, refused)

    def _on_pacs028(self, doc: etree._Element) -> None:
        statuses = []
        for tx in doc.iterfind("{*}FIToFIPmtStsReq/{*}TxInf"):
            uetr = tx.findtext("{*}OrgnlUETR") or ""
            leg = self.legs.get(uetr)
            if leg is None:
                original = {
                    "msg_id": tx.findtext("{*}OrgnlGrpInf/{*}OrgnlMsgId") or "NONREF",
                    "name": "pacs.009.001.08",
                    "e2e": tx.findtext("{*}OrgnlEndToEndId") or "NOTPROVIDED",
                    "uetr": uetr,
                }
                statuses.append((original, "RJCT", "NARR"))
                continue
            self._expire(leg)
            status, reason = {
                "locked": ("ACSP", None),
                "settled": ("ACSC", None),
                "rejected": ("RJCT", leg.reason),
            }.get(leg.state, ("RJCT", "DS02"))
            statuses.append((leg.original, status, reason))
        self._pacs002(statuses)

    # --- writing ----------------------------------------------------------------------

    def _pacs002(self, statuses: list[tuple[dict[str, str], str, str | None]]) -> None:
        msg_id = _id()
        txs = "".join(
            f"<TxInfAndSts>{_original(o)}<TxSts>{s}</TxSts>"
            + (f"<StsRsnInf><Rsn><Cd>{r}</Cd></Rsn></StsRsnInf>" if r else "")
            + "</TxInfAndSts>"
            for o, s, r in statuses
        )
        body = (
            f"<FIToFIPmtStsRpt><GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>{_now()}</CreDtTm>"
            f"</GrpHdr>{txs}</FIToFIPmtStsRpt>"
        )
        self._send(self._envelope("pacs.002.001.10", msg_id, body))

    def _camt029(self, original: dict[str, str], refused: bool) -> None:
        msg_id = _id()
        reason = "<CxlStsRsnInf><Rsn><Cd>ARDT</Cd></Rsn></CxlStsRsnInf>" if refused else ""
        body = (
            f"<RsltnOfInvstgtn><Assgnmt><Id>{msg_id}</Id><Assgnr><Agt>{_bic(self.bic)}</Agt>"
            f"</Assgnr><Assgne><Agt>{_bic(self.connector_bic)}</Agt></Assgne>"
            f"<CreDtTm>{_now()}</CreDtTm></Assgnmt><Sts><Conf>{'RJCR' if refused else 'CNCL'}"
            f"</Conf></Sts><CxlDtls><TxInfAndSts>{_original(original)}<TxCxlSts>"
            f"{'RJCR' if refused else 'ACCR'}</TxCxlSts>{reason}</TxInfAndSts></CxlDtls>"
            "</RsltnOfInvstgtn>"
        )
        self._send(self._envelope("camt.029.001.09", msg_id, body))

    def _admi002(self, ref: str, code: str, text: str) -> bytes:
        body = (
            f"<admi.002.001.01><RltdRef><Ref>{escape(ref)}</Ref></RltdRef><Rsn>"
            f"<RjctgPtyRsn>{code}</RjctgPtyRsn><RjctnDtTm>{_now()}</RjctnDtTm>"
            f"<RsnDesc>{escape(text)}</RsnDesc></Rsn></admi.002.001.01>"
        )
        return self._envelope("admi.002.001.01", _id(), body)

    def _envelope(self, name: str, msg_id: str, body: str) -> bytes:
        text = (
            f'<BizMsg xmlns="{ENV}"><AppHdr xmlns="{HEAD}"><Fr><FIId>{_bic(self.bic)}</FIId>'
            f"</Fr><To><FIId>{_bic(self.connector_bic)}</FIId></To><BizMsgIdr>{msg_id}"
            f"</BizMsgIdr><MsgDefIdr>{name}</MsgDefIdr><BizSvc>swift.cbprplus.02</BizSvc>"
            f"<CreDt>{_now()}</CreDt><Sgntr>"
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="placeholder"/>'
            f'</Sgntr></AppHdr><Document xmlns="{DOC[name]}">{body}</Document></BizMsg>'
        )
        signer = XMLSigner(
            method=methods.enveloped,
            signature_algorithm="ecdsa-sha256",
            digest_algorithm="sha256",
            c14n_algorithm=EXC_C14N,
        )
        signed = signer.sign(etree.fromstring(text), key=self.key_pem, cert=self.cert_pem)
        return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))

    def _send(self, raw: bytes) -> None:
        request = urllib.request.Request(
            self.connector_url + "/iso20022/messages",
            data=raw,
            headers={"Content-Type": "application/xml"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()

    # --- serving ----------------------------------------------------------------------

    def serve(self) -> ThreadingHTTPServer:
        partner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body, content_type = partner.receive(raw)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def close(self) -> None:
        self._work.put(None)
