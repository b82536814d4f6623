"""report.html: one evaluation as a page that opens from disk in any browser (no server, no network).

The headline numbers, the learning curves of the checkpoint's run, the per-stage table, a per-case table sortable by
any column (a click on its heading; `report.html#sort=<column>:<asc|desc>` opens it sorted), the Dice-vs-volume plot
and every case's montage. The plots are inlined as data: URIs; the montages are the PNG files beside the page
(montages/case-N.png), linked from the case table and shown lazily at the end.
"""

from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path

import lits
from lits.core.vocabulary import heading
from lits.evaluate.headline import cases, counting_notes
from lits.evaluate.report import (
    CASE_COLUMNS,
    CONSOLE_STAGE_COLUMNS,
    NOT_AVAILABLE,
    SIZE_BIN_COLUMNS,
    cell,
    describe_source,
    size_bin_rows,
    training_sentence,
)

TILES = (
    "tumor_dice_per_case",
    "tumor_dice_global",
    "liver_dice_per_case",
    "tumor_lesion_recall_iou50",
    "tumor_lesion_precision_iou50",
)
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1em 2em;
color:#1d1d1f;line-height:1.4}
h1{margin-bottom:.1em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#555} code{background:#f3f3f3;padding:0 .25em;border-radius:3px;word-break:break-all}
nav a{margin-right:1em}
.tiles{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.tile{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;min-width:10em;background:#fafafa}
.tile .v{font-size:1.9em;font-weight:600} .tile .k{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right} th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fbfbfb} td.na{color:#999}
img{max-width:100%} figure{margin:1em 0} figcaption{color:#555;font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em;margin:.4em 0}
"""
# Sorts a table.sortable by a clicked heading (numbers by value, n/a and empty cells last); #sort=key:dir on load.
SCRIPT = """
function sortTable(table, index, descending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = r => { const v = r.cells[index].dataset.value; return v === "" ? null : (isNaN(v) ? v : Number(v)); };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === index ? (descending ? "descending" : "ascending") : "none"));
}
document.querySelectorAll("table.sortable").forEach(table => {
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => th.addEventListener("click", () =>
    sortTable(table, i, th.getAttribute("aria-sort") === "ascending")));
});
const wanted = /^#sort=([\\w.]+):(asc|desc)$/.exec(decodeURIComponent(location.hash));
if (wanted) {
  const th = document.querySelector(`table.sortable th[data-key="${wanted[1]}"]`);
  if (th) sortTable(th.closest("table"), th.cellIndex, wanted[2] === "desc");
}
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _e(text) -> str:
    return html.escape(str(text))


def _sort_value(value) -> str:
    """What the script sorts by: the raw number ("" for n/a and missing values), or the text."""
    shown = cell("", value)
    if shown in ("n/a", "-"):
        return ""
    return str(value) if isinstance(value, (int, float)) else str(value)


def _table(rows: list[dict], columns: list[tuple[str, str]], table_id: str, link=None) -> str:
    head = "".join(f'<th data-key="{_e(k)}" aria-sort="none">{_e(h)}</th>' for k, h in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            shown = cell(key, row.get(key))
            content = link(row) if link and key == columns[0][0] else _e(shown)
            klass = ' class="na"' if shown == "n/a" else ""
            cells.append(f'<td data-value="{_e(_sort_value(row.get(key)))}"{klass}>{content}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (  # in a box that scrolls sideways on narrow windows instead of running off the page
        f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _training_section(training, picture: Path | None) -> list[str]:
    if training is None or picture is None:
        return ["<p>No training curves: the checkpoint's run folder (its history.jsonl) is not next to it.</p>"]
    sentence = _e(training_sentence(training))
    sentence = re.sub(r"`([^`]*)`", r"<code>\1</code>", sentence)
    return [f"<p>{sentence}</p>", f'<figure><img alt="learning curves" src="{data_uri(picture)}"></figure>']


def _lesion_section(stage: dict, out_dir: Path, pictures: dict) -> list[str]:
    """Lesion finding by size, the detection curve and, when tuned here, the reliability diagram."""
    rows = size_bin_rows(stage)
    parts = ['<h2 id="lesions">Lesion finding</h2>']
    if rows:
        parts.append("<p>Reference lesions by equivalent diameter, matched with the scorer's rules.</p>")
        parts.append(_table(rows, SIZE_BIN_COLUMNS, "size-table"))
    for key, caption in (
        ("detection_curve", "lesion recall against false positives per case over the tumour threshold"),
        ("reliability", "calibration chosen on this split: reliability before and after (tuning.md)"),
    ):
        if pictures.get(key):
            parts.append(
                f'<figure><img alt="{_e(caption)}" src="{data_uri(out_dir / pictures[key])}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    return parts if len(parts) > 1 else []


def report_html(result: dict, source, summary: dict, rows: list[dict], out_dir: Path, pictures: dict) -> str:
    """The page. `rows`: the main stage's per-case rows; `pictures`: file names in out_dir (None: not drawn) of
    dice_volume and training; montages/case-N.png are linked when they exist."""
    main = summary[source.main]
    tiles = "".join(
        f'<div class="tile"><div class="v">{_e(cell(k, main.get(k)))}</div><div class="k">{_e(heading(k))}</div></div>'
        for k in TILES
        if k in main
    )
    montages = {cid: f"montages/case-{cid}.png" for cid in result["montage_order"]}  # worst first
    montages = {cid: name for cid, name in montages.items() if (out_dir / name).is_file()}

    def case_link(row) -> str:
        name = montages.get(str(row["case"]))
        return f'<a href="{_e(name)}">{_e(row["case"])}</a>' if name else _e(row["case"])

    stage_rows = [{"stage": name, **summary[name]} for name, _ in source.stages]
    case_columns = [(k, heading(k)) for k in CASE_COLUMNS]
    training_png = out_dir / pictures["training"] if pictures.get("training") else None
    dice_png = out_dir / pictures["dice_volume"] if pictures.get("dice_volume") else None
    body = [
        "<h1>LiTS evaluation</h1>",
        f'<p class="sub">{_e(describe_source(result)).replace("`", "")} &middot; {cases(result["num_cases"])} &middot; '
        f"stage <b>{_e(source.main)}</b> &middot; lits {_e(lits.__version__)} &middot; "
        f"{time.strftime('%Y-%m-%d %H:%M')}</p>",
        '<nav><a href="#training">training</a><a href="#stages">stages</a><a href="#cases">cases</a>'
        '<a href="#lesions">lesions</a><a href="#plots">Dice vs volume</a><a href="#montages">montages</a></nav>',
        f'<div class="tiles">{tiles}</div>',
        *[f'<p class="note">{_e(note)}</p>' for note in counting_notes(result)],
        '<h2 id="training">Training</h2>',
        *_training_section(source.training, training_png),
        '<h2 id="stages">Post-processing stages</h2>',
        "<ul>" + "".join(f"<li><code>{_e(n)}</code>: {_e(d)}</li>" for n, d in source.stages) + "</ul>",
        _table(stage_rows, CONSOLE_STAGE_COLUMNS, "stage-table"),
        f'<h2 id="cases">Cases (stage {_e(source.main)})</h2>',
        '<p>Click a heading to sort; a case id opens its montage. Every metric: <a href="cases.csv">cases.csv</a>, '
        'all aggregates: <a href="metrics.json">metrics.json</a>.</p>',
        _table(rows, case_columns, "case-table", case_link),
        f'<p class="sub">{_e(NOT_AVAILABLE)}.</p>',
        *_lesion_section(summary[source.main], out_dir, pictures),
        '<h2 id="plots">Tumour Dice against tumour volume</h2>',
        f'<figure><img alt="tumour Dice vs volume" src="{data_uri(dice_png)}"></figure>' if dice_png else "<p>-</p>",
        '<h2 id="montages">Slices with the largest tumour error</h2>',
        "<p>Cases with the most wrong tumour voxels first. Each row: "
        "the CT (HU window and orientation marked; radiological view), the errors (tumour: yellow "
        "correct, cyan missed, red extra; liver: green tint correct, violet missed, orange extra) and the tumour "
        "probability with the reference tumour outlined.</p>",
    ]
    body += [
        f'<figure id="montage-{_e(cid)}"><img loading="lazy" alt="case {_e(cid)}" src="{_e(name)}">'
        f"<figcaption>case {_e(cid)}</figcaption></figure>"
        for cid, name in montages.items()
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>LiTS evaluation: {_e(result['headline'])}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
