"""index.html: an offline gallery that finds the mistakes (no scripts or fonts from the network).

The rows travel as one JSON block and a small script draws one page of overlays (scaled down) at a time, so the page
loads as fast for 100,000 scans as for 100: filters (a name search, wrong only, predicted class, true class, probability
range, pointing-game misses), sorting, paging, and a confusion matrix of this run whose cells filter.
Every string from a file name reaches the page as text (``textContent``), never as markup. Long on purpose: the
page's HTML, style and script are one template here, so that the gallery stays one offline file.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from brisc.fsio import write_text_atomic
from brisc.inference.outdir import GALLERY_HTML
from brisc.sidecar import ModelCard

PAGE_SIZE = 60

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>brisc-infer gallery</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: system-ui, sans-serif; margin: 1em 1.2em; color: #222; }
.warn { background: #fff3cd; padding: .5em 1em; border: 1px solid #e0c36b; }
#top { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
#controls { display: flex; flex-wrap: wrap; gap: .5em 1.1em; align-items: center; margin: .8em 0; }
#controls label { white-space: nowrap; } input[type=number] { width: 4.5em; } input[type=search] { width: 14em; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: 2px 7px; text-align: left; }
th { background: #f4f4f4; } th[data-sort] { cursor: pointer; user-select: none; } th[data-sort]:hover { background: #e8eefb; }
th.asc::after { content: " \\25b2"; } th.desc::after { content: " \\25bc"; }
#list { width: 100%; } #list td.path { max-width: 34em; overflow-wrap: anywhere; }
#rows img { width: 72px; height: 72px; object-fit: contain; background: #000; display: block; cursor: zoom-in; }
#rows tr.wrong td { background: #fdecea; }
#confusion td { text-align: right; cursor: pointer; min-width: 3em; } #confusion td.diag { font-weight: bold; }
#confusion td:hover { outline: 2px solid #3b7dd8; } #perclass td { text-align: right; }
.pager button { margin: 0 .3em; } .muted { color: #666; }
.badge { display: inline-block; margin-top: .2em; padding: 1px 6px; border-radius: 3px; background: #b00020;
         color: #fff; font-size: .85em; }
#viewer { position: fixed; inset: 0; background: rgba(0,0,0,.88); display: none; align-items: center;
          justify-content: center; flex-direction: column; color: #fff; z-index: 10; }
#viewer.open { display: flex; } #viewer img { max-width: 94vw; max-height: 80vh; background: #000; }
#viewer .bar { margin: .6em; display: flex; gap: 1em; align-items: center; }
#viewer button { font-size: 1em; padding: .3em .9em; }
</style></head><body>
<h1>brisc-infer: __N__ scans</h1>
<p class="warn">Research use only: not a medical device. Model <code>__MODEL__</code> (__KIND__); map: __METHOD__.
__ACCURACY__</p>
<p class="muted">Each map is scaled per scan: its brightest colour is that scan's maximum, not a probability
or a measure of certainty. A red badge marks a scan that is not like the training scans: its class is not
reliable. __MASKS__</p>
<div id="top">__CONFUSION__ __PERCLASS__</div>
__VOLUMES__
<div id="controls">
 <label>name <input type="search" id="q" placeholder="part of a file name"></label>
 <label><input type="checkbox" id="wrong"> wrong only</label>
 <label>predicted <select id="pred"><option value="">any</option></select></label>
 <label>true <select id="truth"><option value="">any</option></select></label>
 <label>probability <input type="number" id="pmin" min="0" max="1" step="0.05" value="0"> to
   <input type="number" id="pmax" min="0" max="1" step="0.05" value="1"></label>
 <label id="misslabel"><input type="checkbox" id="miss"> pointing-game misses only</label>
 <label id="oodlabel">training-likeness <select id="ood"><option value="">any</option>
  <option value="in">like the training scans</option><option value="out">not like the training scans</option></select></label>
 <label>sort <select id="sort">
  <option value="probability:1">probability, highest first</option>
  <option value="probability:-1">probability, lowest first</option>
  <option value="path:-1">path</option>
  <option value="predicted:-1">predicted class</option>
  <option value="truth:-1">true class</option>
  <option value="energy:-1">energy in mask, lowest first</option>
 </select></label>
 <span id="count"></span>
</div>
<div class="pager"></div>
<table id="list"><thead><tr><th>overlay</th><th data-sort="path">path</th><th data-sort="predicted">predicted</th>
<th data-sort="probability">probability</th><th data-sort="runner_p">runner-up</th><th data-sort="truth">true</th>
<th class="maskcol" data-sort="pointing">pointing</th><th class="maskcol" data-sort="energy">energy in mask</th></tr></thead>
<tbody id="rows"></tbody></table>
<div class="pager"></div>
<div id="viewer" role="dialog" aria-label="full view"><div class="bar"><button id="vprev">&larr; previous</button>
<span id="vcap"></span><button id="vnext">next &rarr;</button><button id="vclose">close (Esc)</button></div>
<img id="vimg" alt="full view"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const C = D.columns.reduce((o, k, i) => (o[k] = i, o), {});
const PAGE = __PAGE__;
let shown = D.rows, page = 0, viewing = -1;
const $ = id => document.getElementById(id);
const FILTERS = ["q", "wrong", "pred", "truth", "pmin", "pmax", "miss", "ood", "sort"];
for (const sel of [$("pred"), $("truth")])
  for (const c of D.classes) sel.add(new Option(c, c));
if (!D.masks) { document.querySelectorAll(".maskcol").forEach(e => e.remove()); $("misslabel").remove();
                $("sort").querySelector("option[value^=energy]").remove(); }
function el(tag, text) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }
function value(e) { return e.type === "checkbox" ? (e.checked ? "1" : "") : e.value; }
function saveState() {  // every filter in the address: a link or a reload opens the same view
  const p = new URLSearchParams();
  for (const id of FILTERS) { const e = $(id); if (!e) continue;
    const v = value(e), d = e.tagName === "SELECT" ? e.options[0].value : e.type === "checkbox" ? "" : e.defaultValue;
    if (v !== d && v !== "") p.set(id, v); }
  if (page) p.set("page", page + 1);
  history.replaceState(null, "", p.toString() ? "#" + p.toString() : location.pathname);
}
function reset(e) { if (e.type === "checkbox") e.checked = false; else if (e.tagName === "SELECT") e.selectedIndex = 0;
                   else e.value = e.defaultValue; }
function loadState() {
  FILTERS.forEach(id => $(id) && reset($(id)));
  if (location.hash === "#wrong-only") { $("wrong").checked = true; return; }  // the older short links
  if (location.hash === "#ood-only") { $("ood").value = "out"; return; }
  const p = new URLSearchParams(location.hash.slice(1));
  for (const id of FILTERS) { const e = $(id); if (!e || !p.has(id)) continue;
    if (e.type === "checkbox") e.checked = p.get(id) === "1"; else e.value = p.get(id); }
  return +(p.get("page") || 1) - 1;
}
function apply(keepPage) {
  const q = $("q").value.trim().toLowerCase(), wrong = $("wrong").checked, pred = $("pred").value, truth = $("truth").value;
  const lo = +$("pmin").value, hi = +$("pmax").value, miss = D.masks && $("miss").checked, ood = $("ood").value;
  const [key, dir] = $("sort").value.split(":");
  shown = D.rows.filter(r => (!q || r[C.path].toLowerCase().includes(q)) && (!wrong || r[C.correct] === false)
    && (!pred || r[C.predicted] === pred) && (!truth || r[C.truth] === truth)
    && r[C.probability] >= lo && r[C.probability] <= hi && (!miss || r[C.pointing] === false)
    && (!ood || (ood === "out" ? r[C.ood] === false : r[C.ood] === true)));
  const k = C[key], nulls = dir > 0 ? -Infinity : Infinity;
  shown.sort((a, b) => { const x = a[k] ?? nulls, y = b[k] ?? nulls;
    return (typeof x === "string" ? x.localeCompare(y) : (x > y) - (x < y)) * -dir; });
  document.querySelectorAll("th[data-sort]").forEach(th => th.className =
    th.dataset.sort === key ? (dir > 0 ? "desc" : "asc") : "");
  if (!keepPage) page = 0;
  draw();
}
function open(i) {
  viewing = i; const r = shown[i];
  $("vimg").src = r[C.panel] || r[C.heatmap] || "";
  $("vcap").textContent = (i + 1) + " of " + shown.length + ": " + r[C.path] + " \\u2014 " + r[C.predicted] + " "
    + r[C.probability].toFixed(3) + (r[C.truth] ? " (true: " + r[C.truth] + ")" : "")
    + (r[C.ood] === false ? " \\u2014 not like the training scans: the class is not reliable" : "");
  $("vprev").disabled = i === 0; $("vnext").disabled = i >= shown.length - 1;
  $("viewer").classList.add("open");
}
function close() { viewing = -1; $("viewer").classList.remove("open"); }
function draw() {
  const pages = Math.max(1, Math.ceil(shown.length / PAGE)), body = $("rows");
  page = Math.max(0, Math.min(page, pages - 1));
  $("count").textContent = shown.length + " of " + D.rows.length + " scans";
  body.replaceChildren();
  shown.slice(page * PAGE, (page + 1) * PAGE).forEach((r, j) => {
    const tr = el("tr"), img = el("img"), i = page * PAGE + j;
    if (r[C.correct] === false) tr.className = "wrong";
    img.loading = "lazy"; img.alt = "overlay of " + r[C.path]; img.src = r[C.heatmap] || "";
    img.onclick = () => open(i);
    const td = el("td"); td.append(img); tr.append(td);
    const path = el("td", r[C.path]); path.className = "path";
    const predicted = el("td", r[C.predicted]);
    if (r[C.ood] === false) { const b = el("div", "not like the training scans: the class is not reliable");
                              b.className = "badge"; predicted.append(b); }
    tr.append(path, predicted, el("td", r[C.probability].toFixed(3)),
              el("td", r[C.runner] ? r[C.runner] + " " + r[C.runner_p].toFixed(3) : ""), el("td", r[C.truth] ?? ""));
    if (D.masks) tr.append(el("td", r[C.pointing] === null ? "" : r[C.pointing] ? "hit" : "miss"),
                           el("td", r[C.energy] === null ? "" : r[C.energy].toFixed(3)));
    body.append(tr);
  });
  document.querySelectorAll(".pager").forEach(p => {
    p.replaceChildren();
    const prev = el("button", "previous"), next = el("button", "next");
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    prev.onclick = () => { page--; draw(); }; next.onclick = () => { page++; draw(); };
    p.append(prev, el("span", "page " + (page + 1) + " of " + pages), next);
  });
  saveState();
}
document.querySelectorAll("#controls input, #controls select").forEach(e => e.addEventListener("input", () => apply()));
document.querySelectorAll("th[data-sort]").forEach(th => th.addEventListener("click", () => {
  const [key, dir] = $("sort").value.split(":"), k = th.dataset.sort;
  const want = k + ":" + (key === k ? -dir : (k === "path" || k === "predicted" || k === "truth" ? -1 : 1));
  if (![...$("sort").options].some(o => o.value === want)) $("sort").add(new Option(k, want));
  $("sort").value = want; apply(); }));
document.querySelectorAll("#confusion td[data-t]").forEach(td => td.addEventListener("click", () => {
  $("truth").value = td.dataset.t; $("pred").value = td.dataset.p; $("wrong").checked = false; apply(); }));
$("vprev").onclick = () => viewing > 0 && open(viewing - 1);
$("vnext").onclick = () => viewing < shown.length - 1 && open(viewing + 1);
$("vclose").onclick = close;
$("viewer").addEventListener("click", e => { if (e.target === $("viewer")) close(); });
addEventListener("keydown", e => { if (viewing < 0) return;
  if (e.key === "Escape") close(); else if (e.key === "ArrowRight") $("vnext").click();
  else if (e.key === "ArrowLeft") $("vprev").click(); });
if (!D.rows.some(r => r[C.ood] === false)) $("oodlabel").title = "no scan of this run was flagged";
function fromAddress() { const start = loadState(); apply(); if (start) { page = start; draw(); } }
addEventListener("hashchange", fromAddress);  // an address edited or pasted by hand (saveState fires none)
fromAddress();
// How long the page took, read back by benchmarks/gallery_load.py in a headless browser.
document.documentElement.dataset.drawnMs = Math.round(performance.now());
addEventListener("load", () => { document.documentElement.dataset.loadMs = Math.round(performance.now()); });
</script></body></html>
"""


def printable(name: str) -> str:
    """File names may hold newlines and other control characters: show them escaped, never raw."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)


def script_json(obj) -> str:
    """JSON that is safe inside a <script> element: no '<', '>' or '&' can close it or open a comment."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace(
        ">", "\\u003e").replace("&", "\\u0026")


def _link(path: str | None) -> str | None:
    return quote(path) if path else None


def confusion_html(confusion: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix of this run, rows = true class, columns = predicted; each cell filters the gallery."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in classes)
    body = []
    for i, t in enumerate(classes):
        cells = "".join(f'<td data-t="{e(t)}" data-p="{e(p)}"{" class=diag" if i == j else ""}>{confusion[i][j]}</td>'
                        for j, p in enumerate(classes))
        body.append(f"<tr><th>{e(t)}</th>{cells}</tr>")
    return ('<table id="confusion"><caption>Confusion matrix of this run (click a cell to show its scans)</caption>'
            f'<thead><tr><th>true \u2193 / predicted \u2192</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def runner_up(row: dict) -> tuple[str | None, float | None]:
    """The second most probable class and its probability."""
    probs = sorted((row.get("probabilities") or {}).items(), key=lambda kv: -kv[1])
    return (probs[1][0], round(probs[1][1], 4)) if len(probs) > 1 else (None, None)


def per_class_html(confusion: list[list[int]], classes: list[str]) -> str:
    """Sensitivity (recall) and precision of each class, from this run's confusion matrix."""
    rows = []
    for i, c in enumerate(classes):
        support, predicted = sum(confusion[i]), sum(r[i] for r in confusion)
        sens = f"{confusion[i][i] / support:.3f}" if support else "-"
        prec = f"{confusion[i][i] / predicted:.3f}" if predicted else "-"
        rows.append(f"<tr><th>{html.escape(c)}</th><td>{support}</td><td>{sens}</td><td>{prec}</td></tr>")
    return ('<table id="perclass"><caption>Per class, this run</caption><thead><tr><th>class</th><th>scans</th>'
            '<th>sensitivity</th><th>precision</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def volumes_html(volumes: dict | None) -> str:
    """The volume view: one line per volume (its answer by the stated rule, the slices that drove it, its
    contact sheet); the name shows that volume's slices below."""
    if not volumes:
        return ""
    rows = []
    for v in volumes["volumes"]:
        name = html.escape(v["volume"])
        sheet = (f'<a href="{html.escape(quote(v["contact_sheet"]))}"><img src="{html.escape(quote(v["contact_sheet"]))}" '
                 'alt="contact sheet" style="height:96px"></a>' if v.get("contact_sheet") else "")
        driving = f"{v['driving_slices'][0]}-{v['driving_slices'][-1]}" if v["driving_slices"] else "-"
        flag = "" if v["in_distribution"] else ' <span class="badge">most slices not like the training scans</span>'
        rows.append(f'<tr><td><a href="#q={html.escape(quote(v["volume"]))}">{name}</a></td><td>{html.escape(v["predicted"])}'
                    f"{flag}</td><td>{v['slices']}</td><td>{driving}</td><td>{v['strongest_slice']}</td><td>{sheet}</td></tr>")
    more = f" (the first 100 of {volumes['n']}; all in volumes.csv)" if volumes["n"] > len(volumes["volumes"]) else ""
    return (f'<h2>Volumes{more}</h2><p class="muted">Rule: {html.escape(volumes["rule"])}. {html.escape(volumes["meaning"])}.</p>'
            '<table id="volumes"><thead><tr><th>volume (its slices below)</th><th>answer</th><th>slices</th>'
            '<th>driving slices</th><th>strongest slice</th><th>contact sheet</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def gallery_rows(rows: list[dict]) -> dict:
    """The gallery's data: column names once, then one short array per scan with a heatmap."""
    columns = ["path", "predicted", "probability", "truth", "correct", "pointing", "energy", "heatmap", "panel",
               "ood", "runner", "runner_p"]
    out = []
    for r in rows:
        if not r.get("heatmap"):
            continue
        label = printable(r["path"]) + ("" if r["frame"] is None else f" (frame {r['frame']})")
        out.append([label, r["predicted"], round(r["probability"], 4), r["true_label"], r["correct"],
                    r.get("pointing_hit"), None if r.get("energy_in_mask") is None else round(r["energy_in_mask"], 4),
                    _link(r["heatmap"]), _link(r.get("panel")), r.get("in_distribution"),
                    *runner_up(r)])
    return {"columns": columns, "rows": out}


def write_gallery(out: Path, rows: list[dict], card: ModelCard, summary: dict | None = None) -> Path:
    """Write out/index.html for the rows that have a heatmap; ``summary`` (this run's) gives the accuracy
    and confusion matrix when the true labels are known."""
    summary = summary or {}
    classes = list(card.classes)
    data = gallery_rows(rows) | {"classes": classes, "masks": any(r.get("pointing_hit") is not None for r in rows)}
    gt = summary.get("ground_truth")
    if gt:
        accuracy = (f"On the {gt['n']} scans whose class is known (from the file or folder name), this run's accuracy "
                    f"is {gt['accuracy']:.3f} and macro-F1 {gt['macro_f1']:.3f}.")
        confusion = confusion_html(gt["confusion"], gt["classes"])
        perclass = per_class_html(gt["confusion"], gt["classes"])
    else:
        accuracy = "The true classes of these scans are not known (neither file nor folder names give them)."
        confusion = perclass = ""
    masks = summary.get("masks")
    mask_text = html.escape(masks["explanation"], quote=False) if masks and masks.get("explanation") else ""
    acc = card.validation_metrics.get("accuracy")
    if acc is not None:
        accuracy += f" (On its own validation split the model scored {acc:.3f}.)"
    method = next((r.get("explain") for r in rows if r.get("explain")), "")
    page = (_PAGE.replace("__N__", str(len(data["rows"]))).replace("__MODEL__", html.escape(card.model_file))
            .replace("__KIND__", html.escape(card.model_kind)).replace("__METHOD__", html.escape(str(method)))
            .replace("__ACCURACY__", html.escape(accuracy, quote=False)).replace("__MASKS__", mask_text)
            .replace("__CONFUSION__", confusion).replace("__PERCLASS__", perclass)
            .replace("__VOLUMES__", volumes_html(summary.get("volumes"))).replace("__PAGE__", str(PAGE_SIZE))
            .replace("__DATA__", script_json(data)))
    path = out / GALLERY_HTML
    write_text_atomic(path, page)
    return path
