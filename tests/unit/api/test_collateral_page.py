"""The proof-of-collateral page without a server: amounts as KZT, a coverage that never
overstates the backing, the chart, the cosigners read from a checkpoint, and a page that names
nothing outside the gateway."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from gateway.api.collateral_chart import chart, nice_step, short_kzt
from gateway.api.collateral_page import ASSETS, coverage, kzt, render
from gateway.collateral import views
from gateway.collateral.note import Checkpoint, Cosigner, Signer, cosign, sign_note
from gateway.collateral.runtime import CollateralLog
from gateway.config import CollateralSettings

ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000cc"
INT64 = 2**63 - 1


def _parse_kzt(text: str) -> int:
    sign = -1 if text.startswith("\u2212") else 1
    whole, cents = text.lstrip("\u2212").split(".")
    assert len(cents) == 2
    return sign * (int(whole.replace(",", "")) * 100 + int(cents))


def test_amounts_are_kzt_with_two_decimals_at_the_edges() -> None:
    assert kzt(0) == "0.00"
    assert kzt(1) == "0.01"
    assert kzt(100) == "1.00"
    assert kzt(123_456_789) == "1,234,567.89"
    assert kzt(-5) == "\u22120.05"
    assert kzt(INT64) == "92,233,720,368,547,758.07"


@given(st.integers(min_value=-INT64, max_value=INT64))
def test_every_amount_reads_back_to_the_same_tiyn(tiyn: int) -> None:
    assert _parse_kzt(kzt(tiyn)) == tiyn


def test_coverage_is_rounded_down_and_absent_without_tokens() -> None:
    assert coverage(100, 100) == "100.00 %"
    assert coverage(99_999, 100_000) == "99.99 %"
    assert coverage(2, 3) == "66.66 %"  # not 66.67: the page never rounds the backing up
    assert coverage(150, 100) == "150.00 %"
    assert coverage(0, 100) == "0.00 %"
    assert coverage(100, 0) is None


@given(st.integers(min_value=0, max_value=INT64), st.integers(min_value=1, max_value=INT64))
def test_coverage_never_overstates_the_backing(reserve: int, supply: int) -> None:
    text = coverage(reserve, supply)
    assert text is not None and text.endswith(" %")
    basis_points = int(text.removesuffix(" %").replace(",", "").replace(".", ""))
    assert basis_points * supply <= reserve * 10_000 < (basis_points + 1) * supply


def test_axis_steps_and_labels() -> None:
    assert nice_step(1_000) == 200
    assert nice_step(9_000) == 2_000
    assert nice_step(12) == 5
    assert short_kzt(0) == "0"
    assert short_kzt(250_00) == "250"
    assert short_kzt(2_500_000_00) == "2.5M"
    assert short_kzt(1_000_00) == "1K"


def _point(i: int, reserve: int, supply: int, second: int) -> views.StatementPoint:
    return views.StatementPoint(
        i, 10 + i, "0x" + "ab" * 32, reserve, supply, f"2026-12-06T12:00:{second:02d}.000Z"
    )


def test_the_chart_has_one_point_per_statement_inside_the_plot() -> None:
    points = [_point(i, 100 * (i + 1), 90 * (i + 1), i) for i in range(30)]
    svg, data = chart(points)
    assert 'data-points="30"' in svg
    assert [row[1] for row in data] == list(range(30))
    xs = [float(str(row[0])) for row in data]
    assert xs == sorted(xs)
    frame = re.search(r'class="frame" x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)"', svg)
    assert frame is not None
    x, y, w, h = (int(v) for v in frame.groups())
    for row in data:
        px, ry, sy = float(str(row[0])), float(str(row[6])), float(str(row[7]))
        assert x <= px <= x + w and y <= ry <= y + h and y <= sy <= y + h


def test_a_chart_without_statements_or_with_one_or_all_at_one_time_still_draws() -> None:
    empty, data = chart([])
    assert "No reserve statement yet" in empty and data == []
    one, data = chart([_point(0, 100, 100, 0)])
    assert 'data-points="1"' in one and len(data) == 1
    same_time = [_point(i, 100, 100, 5) for i in range(3)]
    _, data = chart(same_time)
    assert len({row[0] for row in data}) == 3  # spread by index instead


WITNESS = Cosigner.generate("witness.example/w1")
ABSENT = Cosigner.generate("witness.example/w2")


def _log(*witnesses: Cosigner) -> CollateralLog:
    settings = CollateralSettings.model_validate(
        {"witnesses": [{"url": "http://127.0.0.1:9", "vkey": w.vkey()} for w in witnesses]}
    )
    return CollateralLog("seg", ORIGIN, Signer.generate(ORIGIN), settings)


def _note(clog: CollateralLog, size: int = 3) -> tuple[str, str]:
    body = Checkpoint(ORIGIN, size, b"\x01" * 32, ("timestamp 1796565600",)).body()
    return body, sign_note(body, [clog.signer])


def test_cosigners_are_the_signature_lines_other_than_the_logs_own() -> None:
    clog = _log(WITNESS)
    body, note = _note(clog)
    assert views.cosignatures(clog, note) == []
    other = Signer.generate("mirror.example")
    stranger = Cosigner.generate("witness.example/w9")
    forged = cosign(body.replace("\n3\n", "\n4\n"), WITNESS, timestamp=1796565602)
    cosigned = note + cosign(body, WITNESS, timestamp=1796565601)
    cosigned += sign_note(body, [other]).split("\n\n", 1)[1]
    cosigned += cosign(body, stranger, timestamp=1796565603)
    found = views.cosignatures(clog, cosigned)
    assert [(c.name, c.key_id, c.timestamp, c.witness) for c in found] == [
        ("witness.example/w1", WITNESS.key_id.hex(), 1796565601, True),
        ("mirror.example", other.key_id.hex(), None, False),
        ("witness.example/w9", stranger.key_id.hex(), 1796565603, False),
    ]
    # The configured witness's key over another checkpoint's text: named, not counted.
    bad = views.cosignatures(clog, note + forged)
    assert [(c.name, c.witness) for c in bad] == [("witness.example/w1", False)]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_styles = 0
        self.inline_scripts = 0
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("href", "src", "action") and v]
        self.inline_styles += "style" in found or tag == "style"
        self._script = found if tag == "script" else None

    def handle_data(self, data: str) -> None:
        if self._script is not None and data.strip():
            self.inline_scripts += self._script.get("type") != "application/json"


def _overview(clog: CollateralLog, note: str) -> views.Overview:
    points = [_point(i, 100_000 + i, 100_000, i) for i in range(5)][::-1]
    moves = [
        views.Movement(7, "dt", -300_01, 99_99, "2026-12-06T12:00:09.000Z", None,
                       "redeem-ab-1", "0x" + "cd" * 32, None, {"op": "redeem"}),
        views.Movement(6, "burn", -300_01, 70_00, None, 41, "redeem-ab-1", "0x" + "cd" * 32, 1,
                       {"from": "0x" + "70" * 20}),
    ]  # fmt: skip
    return views.Overview(
        origin=ORIGIN,
        vkey=clog.vkey,
        note=note,
        size=9,
        root=b"\x01" * 32,
        signed_at=1796565600,
        cosignatures=[
            views.Cosignature("witness.example/w1", WITNESS.key_id.hex(), 1796565601, True)
        ],
        witnesses=[p.verifier.vkey() for p in clog.witnesses],
        statements=points,
        newest=views.StatementProof(4, b'{"type":"statement"}', [b"\x02" * 32]),
        movements=moves,
    )


def test_the_page_names_nothing_outside_the_gateway_and_inlines_no_code() -> None:
    clog = _log()
    _, note = _note(clog, 9)
    html = render(_overview(clog, note), "http://127.0.0.1:8080", datetime.now(UTC))
    refs = _Refs()
    refs.feed(html)
    assert refs.refs and all(r.startswith("/") and not r.startswith("//") for r in refs.refs)
    # The Content-Security-Policy allows no inline code: data blocks only.
    assert refs.inline_styles == 0 and refs.inline_scripts == 0
    for name in ASSETS:
        assert f"/collateral/assets/{name}?v=" in html


def test_the_page_shows_the_figures_the_cosigners_and_the_exact_command() -> None:
    clog = _log(WITNESS, ABSENT)
    _, note = _note(clog, 9)
    now = datetime.fromtimestamp(1796565600 + 42, UTC)
    html = render(_overview(clog, note), "https://gateway.example.kz", now)
    assert '<span id="reserve" data-tiyn="100004">1,000.04</span>' in html
    assert '<span id="supply" data-tiyn="100000">1,000.00</span>' in html
    assert '<p class="big" id="coverage">100.00 %</p>' in html
    assert 'data-age="42">42 s ago<' in html
    assert f'data-name="witness.example/w1" data-key-id="{WITNESS.key_id.hex()}" ' in html
    assert 'data-witness="true"' in html and "2026-12-06 14:00:01 UTC" in html
    assert f'data-key-id="{ABSENT.key_id.hex()}" data-witness="missing"' in html
    assert (
        "dt-gateway verify-collateral \\\n    --url https://gateway.example.kz \\\n"
        "    --rpc https://YOUR-OWN-ETHEREUM-NODE \\\n"
        f"    --log-key &#x27;{clog.vkey}&#x27; \\\n"
        f"    --witness &#x27;{WITNESS.vkey()}&#x27; \\\n"
        f"    --witness &#x27;{ABSENT.vkey()}&#x27; \\\n"
        "    --state ~/.dt-collateral.json" in html
    )
    assert 'data-tx="0x' + "cd" * 32 + '"' in html
    assert "\u2212300.01" in html  # a redemption is shown as money out
