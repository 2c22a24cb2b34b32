"""``GET /collateral``: the public proof-of-collateral page, for people rather than verifiers.

Server-rendered HTML from one signed checkpoint (:func:`gateway.collateral.views.overview`):
reserve, supply and coverage now, a chart of both over time, the checkpoint and its cosigners,
the latest movements with their chain transactions, and the verifier's command. Its script
(``static/collateral.js``) checks in the browser, with WebCrypto, that the newest statement is
in the signed tree and that the checkpoint's signature verifies under the log key shown, and
says exactly that; the rest is labelled as the gateway's view.

Every asset is served by the gateway itself (``/collateral/assets/...``) and the page's
Content-Security-Policy lets the browser load nothing else, so the page works in a network
without internet and cannot be made to call out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.openapi import ResponseSpec

from gateway.api.collateral_chart import chart
from gateway.api.ratelimit import limit_by_address
from gateway.collateral import views
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.service import LogNotReady
from gateway.collateral.store import CollateralUnitOfWork

STALE_SECONDS = 300
"""A checkpoint older than this is flagged (the verifier's default ``--max-age``)."""
CHART_STATEMENTS = views.MAX_STATEMENTS
LATEST_MOVEMENTS = 20

_STATIC = Path(__file__).parent / "static"
_ASSET_TYPES = {
    "collateral.css": "text/css; charset=utf-8",
    "collateral.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
ASSETS: dict[str, tuple[str, bytes]] = {
    name: (media_type, (_STATIC / name).read_bytes()) for name, media_type in _ASSET_TYPES.items()
}
_VERSION = {name: hashlib.sha256(body).hexdigest()[:12] for name, (_, body) in ASSETS.items()}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The browser may load scripts, styles and images from this gateway only, and nothing else."""
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


# ------------------------------------------------------------------ formatting


def kzt(tiyn: int) -> str:
    """Integer tiyn as KZT with two decimals and thousands separators: ``1,234.50``."""
    sign = "\u2212" if tiyn < 0 else ""
    whole, cents = divmod(abs(tiyn), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def coverage(reserve: int, supply: int) -> str | None:
    """reserve ÷ supply as a percentage, rounded down so it never overstates the backing;
    None when no tokens are in circulation."""
    if supply <= 0:
        return None
    basis_points = reserve * 10_000 // supply
    return f"{basis_points // 100:,}.{basis_points % 100:02d} %"


def when(rfc3339: str) -> str:
    return rfc3339.replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"


def ago(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s ago"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h ago"


def _short(value: str, head: int = 10, tail: int = 6) -> str:
    return value if len(value) <= head + tail + 1 else f"{value[:head]}\u2026{value[-tail:]}"


def _json_for_script(value: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def public_url(request: Request[Any, Any, Any]) -> str:
    """The URL this page was reached at, for the verifier's ``--url``; a Host header that is
    not a plain host name or address gives a placeholder instead."""
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        return "https://THIS-GATEWAY"
    scheme = "https" if request.url.scheme == "https" else "http"
    return f"{scheme}://{host}"


# ------------------------------------------------------------------ the page


def _head(title: str) -> str:
    css, js, icon = (_VERSION[n] for n in ("collateral.css", "collateral.js", "icon.svg"))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel="icon" type="image/svg+xml" href="/collateral/assets/icon.svg?v={icon}">'
        f'<link rel="stylesheet" href="/collateral/assets/collateral.css?v={css}">'
        f'<script defer src="/collateral/assets/collateral.js?v={js}"></script>'
        "</head><body>"
    )


def _header(origin: str | None) -> str:
    out = [
        '<header class="top"><div class="wrap"><h1>Proof of collateral</h1>'
        '<p class="lede">Every token of the DT-backed stablecoin is meant to be backed by one tiyn '
        "of Digital Tenge in a segregated wallet. This page shows the public, signed log that "
        "proves it, and checks part of it in your browser.</p>"
    ]
    if origin:
        out.append(f'<p class="origin mono">Log {escape(origin)}</p>')
    out.append("</div></header>")
    return "".join(out)


def _figures(ov: views.Overview) -> str:
    if not ov.statements:
        return (
            '<section><h2>No reserve statement yet</h2><p class="sub">The log has not stated '
            "the reserve and supply yet; statements follow every mint and redemption and come "
            "at least every minute.</p></section>"
        )
    now = ov.statements[0]
    ratio = coverage(now.reserve, now.supply)
    covered = now.reserve >= now.supply
    return (
        '<div class="figures">'
        '<div class="card"><h2><span class="swatch reserve"></span>Reserve</h2>'
        f'<p class="big"><span id="reserve" data-tiyn="{now.reserve}">{kzt(now.reserve)}</span> '
        '<span class="unit">KZT</span></p>'
        '<p class="what">DT held in the segregated wallet</p></div>'
        '<div class="card"><h2><span class="swatch supply"></span>Supply</h2>'
        f'<p class="big"><span id="supply" data-tiyn="{now.supply}">{kzt(now.supply)}</span> '
        '<span class="unit">KZT</span></p>'
        '<p class="what">Tokens in circulation (totalSupply)</p></div>'
        f'<div class="card {"covered" if covered else "short"}"><h2>Coverage</h2>'
        f'<p class="big" id="coverage">{escape(ratio or "no tokens")}</p>'
        f'<p class="what">{"Reserve ÷ supply, rounded down" if ratio else "Nothing to back"}'
        f"{'' if covered else ': the tokens exceed the reserve'}</p></div>"
        "</div>"
        f'<p class="asof">As of reserve statement <a href="/v1/collateral/entries/{now.index}" '
        f'id="statement-index" data-index="{now.index}">#{now.index}</a>: block {now.block}, '
        f"{escape(when(now.time))}. "
        '<span class="view">the gateway\'s view; checked below</span></p>'
    )


_CHECKS = (
    ("inclusion", "The newest reserve statement is in the signed tree"),
    ("figures", "The figures shown are that statement's"),
    ("signature", "The checkpoint is signed by the log key"),
    ("cosignatures", "The checkpoint is cosigned by the witnesses named"),
)


def _browser_check() -> str:
    items = "".join(
        f'<li data-check="{name}" class="pending">{escape(label)}: checking\u2026</li>'
        for name, label in _CHECKS
    )
    return (
        '<section class="check" id="browser-check"><h2>Checked in your browser</h2>'
        f"<ul>{items}</ul>"
        '<p class="fine">The keys used here are the ones this page shows. Not checked here: '
        "that they are the operator's and the witnesses' real keys (compare them with ones you "
        "pinned from elsewhere), that the chain anchors the same log, that the chain agrees "
        "with the statements, and the replay of every earlier entry. The verifier below "
        "checks all of them.</p></section>"
    )


def _chart(ov: views.Overview) -> tuple[str, str]:
    oldest_first = list(reversed(ov.statements))
    svg, points = chart(oldest_first)
    count = len(oldest_first)
    if count == 0:
        sub = "Reserve statements will show here."
    else:
        which = (
            "The only reserve statement" if count == 1 else f"The last {count:,} reserve statements"
        )
        sub = (
            f"{which} of the log (a statement follows every mint and redemption, and comes at "
            "least every minute)."
        )
    html = (
        '<section><h2 id="chart-title">Reserve and supply over time '
        '<span class="view">the gateway\'s view</span></h2>'
        f'<p class="sub">{escape(sub)}</p>'
        '<div class="legend"><span><i class="reserve"></i>Reserve (DT)</span>'
        '<span><i class="supply"></i>Supply (tokens)</span><span>amounts in KZT</span></div>'
        f'<div class="plot">{svg}</div></section>'
    )
    return html, _json_for_script(points)


def _checkpoint(ov: views.Overview, now: datetime) -> str:
    age = ov.age_seconds(now)
    if ov.signed_at is None or age is None:
        signed = '<span class="fine">no timestamp</span>'
    else:
        at = datetime.fromtimestamp(ov.signed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        stale = (
            f' <strong class="stale">older than {STALE_SECONDS // 60} minutes: the log may '
            "have stopped</strong>"
            if age > STALE_SECONDS
            else ""
        )
        signed = (
            f'<span id="checkpoint-time" data-unix="{ov.signed_at}">{at}</span>, '
            f'<span id="checkpoint-age" data-age="{age}">{ago(age)}</span>{stale}'
        )
    name, key_id = ov.vkey.split("+")[:2]
    cosigners = _cosigners(ov)
    return (
        "<section><h2>Checkpoint</h2>"
        '<p class="sub">The log\'s signed tree head: it commits to every entry so far.</p>'
        '<dl class="facts">'
        f'<dt>Tree size</dt><dd id="tree-size" data-size="{ov.size}">{ov.size:,} entries</dd>'
        f'<dt>Root hash</dt><dd class="mono" id="root">{escape(_b64(ov.root))}</dd>'
        f"<dt>Signed</dt><dd>{signed}</dd>"
        f'<dt>Log key</dt><dd><span class="mono" id="log-key" data-vkey="{escape(ov.vkey)}">'
        f"{escape(name)}+{escape(key_id)}</span></dd>"
        f"<dt>Cosigners</dt><dd>{cosigners}"
        '<div class="fine">Witnesses cosign the same checkpoint, so that the log cannot show '
        "different histories to different people. Every signature line is listed by the name "
        "it states; a named witness is one this gateway is configured with.</div></dd>"
        "</dl></section>"
    )


def _cosigners(ov: views.Overview) -> str:
    rows = []
    for c in ov.cosignatures:
        when = (
            f", {datetime.fromtimestamp(c.timestamp, UTC):%Y-%m-%d %H:%M:%S} UTC"
            if c.timestamp is not None
            else ""
        )
        badge = (
            '<span class="view">named witness</span>'
            if c.witness
            else '<span class="view">not a witness this gateway names</span>'
        )
        rows.append(
            f'<li data-name="{escape(c.name)}" data-key-id="{c.key_id}" '
            f'data-witness="{str(c.witness).lower()}"><span class="mono">{escape(c.name)}</span>'
            f' {badge}<div class="fine">key {c.key_id}{when}</div></li>'
        )
    signed = {(c.name, c.key_id) for c in ov.cosignatures if c.witness}
    for vkey in ov.witnesses:
        w_name, w_id = vkey.split("+")[:2]
        if (w_name, w_id) not in signed:
            rows.append(
                f'<li data-name="{escape(w_name)}" data-key-id="{escape(w_id)}" '
                f'data-witness="missing"><span class="mono">{escape(w_name)}</span> '
                '<strong class="stale">no cosignature on this checkpoint</strong></li>'
            )
    if not rows:
        return '<span id="cosigners" class="fine">none: this gateway names no witness</span>'
    return f'<ul class="cosigners" id="cosigners">{"".join(rows)}</ul>'


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _verify(ov: views.Overview, url: str) -> str:
    command = (
        "dt-gateway verify-collateral \\\n"
        f"    --url {url} \\\n"
        "    --rpc https://YOUR-OWN-ETHEREUM-NODE \\\n"
        f"    --log-key '{ov.vkey}' \\\n"
        + "".join(f"    --witness '{w}' \\\n" for w in ov.witnesses)
        + "    --state ~/.dt-collateral.json"
    )
    return (
        '<section class="verify"><h2>Verify it yourself '
        '<button class="copy" type="button">Copy</button></h2>'
        '<p class="sub">Everything, from the log\'s public files and your own Ethereum node.</p>'
        f'<pre class="command"><code id="verify-command">{escape(command)}</code></pre>'
        "<p>The verifier checks the checkpoint's signature"
        + (" and the witnesses' cosignatures" if ov.witnesses else "")
        + ", that the log extends the one you verified before and is the one the chain "
        "anchors, every entry against the signed root, every balance and supply, and every "
        "mint and redemption on the chain against the log, through your node.</p>"
        '<p class="fine">Pin the log key'
        + (" and the witnesses' keys" if ov.witnesses else "")
        + " from a source other than this page"
        + (
            ' (each <span class="mono">--witness</span> must cosign, unless '
            '<span class="mono">--quorum N</span> asks for fewer)'
            if ov.witnesses
            else ""
        )
        + '. The verifier needs only Python\'s standard library, <span class="mono">'
        'cryptography</span> and <span class="mono">httpx</span> (<span class="mono">python '
        "-m gateway.collateral.verifier</span>).</p></section>"
    )


def _movement_row(m: views.Movement) -> str:
    if m.type == "dt":
        label = "DT in" if m.amount > 0 else "DT out"
        detail = str(m.entry.get("op", ""))
        at = escape(when(m.time or "").removesuffix(" UTC"))
        after = f"reserve {kzt(m.after)}"
    else:
        label = "Tokens minted" if m.type == "mint" else "Tokens redeemed"
        who = m.entry.get("to") if m.type == "mint" else m.entry.get("from")
        detail = f"{'to' if m.type == 'mint' else 'from'} {_short(str(who), 8, 4)}"
        at = f"block {m.block}"
        after = f"supply {kzt(m.after)}"
    tx = (
        f'<span class="mono" title="{escape(m.tx_hash)}">{escape(_short(m.tx_hash))}</span>'
        if m.tx_hash
        else '<span class="none">\u2014</span>'
    )
    transfer = (
        f'<span class="mono" title="{escape(m.transfer_id)}">'
        f"{escape(_short(m.transfer_id, 10, 4))}</span>"
        if m.transfer_id
        else '<span class="none">\u2014</span>'
    )
    sign = "in" if m.amount > 0 else "out"
    amount = ("+" if m.amount > 0 else "") + kzt(m.amount)
    return (
        f'<tr data-index="{m.index}" data-type="{m.type}" data-amount="{m.amount}" '
        f'data-after="{m.after}" data-tx="{escape(m.tx_hash or "")}">'
        f'<td><a href="/v1/collateral/entries/{m.index}">#{m.index}</a></td>'
        f'<td class="when">{at}</td>'
        f'<td class="kind">{escape(label)}<small>{escape(detail)}</small></td>'
        f'<td class="num {sign}">{amount}</td>'
        f'<td class="num">{after}</td>'
        f"<td>{tx}</td>"
        f'<td class="opt">{transfer}</td></tr>'
    )


def _movements(ov: views.Overview) -> str:
    if not ov.movements:
        body = '<tr><td colspan="7" class="none">No movement yet.</td></tr>'
    else:
        body = "".join(_movement_row(m) for m in ov.movements)
    return (
        '<section><h2>Latest movements <span class="view">the gateway\'s view</span></h2>'
        '<p class="sub">DT into and out of the segregated wallet, and the mints and redemptions '
        "on the chain, newest first. Each entry links to its inclusion proof.</p>"
        '<table class="moves" id="movements"><thead><tr><th>Entry</th><th>When (UTC)</th>'
        '<th>Movement</th><th class="num">Amount (KZT)</th><th class="num">After (KZT)</th>'
        '<th>Chain transaction</th><th class="opt">DT transfer</th></tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


_FOOTER = (
    '<footer class="wrap">The log\'s public files: '
    '<a href="/collateral/log/checkpoint">checkpoint</a>'
    '<a href="/v1/collateral/statement">newest statement</a>'
    '<a href="/v1/collateral/statements?limit=100">statements</a>'
    '<a href="/v1/collateral/movements?limit=100">movements</a>'
    '<a href="/v1/collateral/keys">keys</a>'
    "<br>This page loads nothing from outside this gateway and runs no third-party code."
    "</footer>"
)


def render(ov: views.Overview, url: str, now: datetime) -> str:
    """The whole page for the snapshot ``ov``, as seen from ``url`` at ``now``."""
    chart_html, chart_data = _chart(ov)
    proof = None
    if ov.newest is not None:
        proof = {
            "index": ov.newest.index,
            "entry": _b64(ov.newest.entry),
            "proof": [_b64(h) for h in ov.newest.proof],
        }
    data = {
        "note": ov.note,
        "vkey": ov.vkey,
        "witnesses": ov.witnesses,
        "size": ov.size,
        "statement": proof,
    }
    return "".join(
        [
            _head("Proof of collateral"),
            _header(ov.origin),
            '<main class="wrap">',
            _figures(ov),
            chart_html,
            '<div class="cols">',
            _browser_check(),
            _checkpoint(ov, now),
            "</div>",
            _verify(ov, url),
            _movements(ov),
            "</main>",
            _FOOTER,
            f'<script type="application/json" id="proof-data">{_json_for_script(data)}</script>',
            f'<script type="application/json" id="chart-data">{chart_data}</script>',
            "</body></html>",
        ]
    )


def render_unavailable(title: str, detail: str) -> str:
    return "".join(
        [
            _head("Proof of collateral"),
            _header(None),
            f'<main class="wrap"><section><h2>{escape(title)}</h2>'
            f'<p class="sub">{escape(detail)}</p></section></main></body></html>',
        ]
    )


# ------------------------------------------------------------------ routes

_HTML_503 = ResponseSpec(
    data_container=str,
    media_type=MediaType.HTML,
    description="No collateral log here, or no checkpoint signed yet (an HTML page)",
)
_429 = ResponseSpec(None, description="Too many requests from this address")


class CollateralPageController(Controller):
    path = "/collateral"
    tags = ["public: proof of collateral"]
    guards = [limit_by_address]
    security: list[dict[str, list[str]]] = [{}]

    @get(
        "/",
        sync_to_thread=True,
        media_type=MediaType.HTML,
        summary="The proof-of-collateral page (HTML, for people)",
        description=(
            "Reserve, supply and coverage from the newest reserve statement, a chart of both "
            "over time, the checkpoint with its age and cosigners, the latest movements with "
            "their chain transactions and the verifier's command. Every asset is served by "
            "the gateway (Content-Security-Policy: nothing else is loaded)."
        ),
        responses={429: _429, 503: _HTML_503},
    )
    def page(self, request: Request[Any, Any, Any], state: State) -> Response[str]:
        clog: CollateralLog | None = state.get("collateral")
        if clog is None:
            return _unavailable(
                "No collateral log",
                "This gateway runs no stablecoin, so it keeps no collateral log.",
                None,
            )
        engine = state.engine

        def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
            return CollateralUnitOfWork(engine, readonly=readonly)

        try:
            ov = views.overview(uow, clog, chart=CHART_STATEMENTS, latest=LATEST_MOVEMENTS)
        except LogNotReady:
            return _unavailable(
                "The log is starting",
                "The collateral log has not signed its first checkpoint yet; try again in a "
                "few seconds.",
                "5",
            )
        html = render(ov, public_url(request), datetime.now(UTC))
        return Response(html, media_type=MediaType.HTML, headers=_PAGE_HEADERS)

    @get(
        "/assets/collateral.css",
        sync_to_thread=False,
        media_type=_ASSET_TYPES["collateral.css"],
        summary="The page's stylesheet",
        responses={429: _429},
    )
    def stylesheet(self) -> Response[bytes]:
        return _asset("collateral.css")

    @get(
        "/assets/collateral.js",
        sync_to_thread=False,
        media_type=_ASSET_TYPES["collateral.js"],
        summary="The page's script (its in-browser check)",
        responses={429: _429},
    )
    def script(self) -> Response[bytes]:
        return _asset("collateral.js")

    @get(
        "/assets/icon.svg",
        sync_to_thread=False,
        media_type=_ASSET_TYPES["icon.svg"],
        summary="The page's icon",
        responses={429: _429},
    )
    def icon(self) -> Response[bytes]:
        return _asset("icon.svg")


def _asset(name: str) -> Response[bytes]:
    media_type, body = ASSETS[name]
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def _unavailable(title: str, detail: str, retry_after: str | None) -> Response[str]:
    headers = dict(_PAGE_HEADERS)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Response(
        render_unavailable(title, detail),
        status_code=503,
        media_type=MediaType.HTML,
        headers=headers,
    )


__all__ = ["ASSETS", "CSP", "CollateralPageController", "coverage", "kzt", "render"]
