"""index.html: an offline gallery of the heatmaps (no scripts or fonts from the network)."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from brisc.fsio import write_text_atomic

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>brisc-infer gallery</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
th {{ cursor: pointer; background: #f4f4f4; }} img {{ width: 160px; height: 160px; object-fit: contain; background: #000; }}
.warn {{ background: #fff3cd; padding: .5em 1em; border: 1px solid #e0c36b; }}
</style></head><body>
<h1>brisc-infer: {n} scans</h1>
<p class="warn">Research use only: not a medical device. Model <code>{model}</code> ({kind}); map: {method}.
Validation accuracy of this model: {acc}.</p>
<table id="t"><thead><tr><th>scan</th><th>overlay</th><th data-k="0">path</th><th data-k="1">predicted</th>
<th data-k="2">probability &#x2195;</th><th data-k="3">truth</th></tr></thead><tbody>
{rows}
</tbody></table>
<script>
// Click a header to sort by it (probability sorts numerically); click again to reverse.
document.querySelectorAll("th[data-k]").forEach(th => th.addEventListener("click", () => {{
  const k = +th.dataset.k, body = document.querySelector("#t tbody"), rows = [...body.rows];
  const dir = th.dataset.dir = th.dataset.dir === "asc" ? "desc" : "asc";
  rows.sort((a, b) => {{
    const x = a.cells[k + 2].dataset.v ?? a.cells[k + 2].textContent, y = b.cells[k + 2].dataset.v ?? b.cells[k + 2].textContent;
    const c = isNaN(x) || isNaN(y) ? x.localeCompare(y) : x - y; return dir === "asc" ? c : -c; }});
  rows.forEach(r => body.appendChild(r)); }}));
</script></body></html>
"""


def printable(name: str) -> str:
    """File names may hold newlines and other control characters: show them escaped, never raw."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)


def write_gallery(out: Path, rows: list[dict], meta: dict) -> Path:
    items = []
    for r in sorted(rows, key=lambda r: -r["probability"]):
        if not r.get("heatmap"):
            continue
        ov = quote(r["heatmap"])
        panel = quote(r["heatmap"][: -len(".png")] + ".panel.png")
        label = html.escape(printable(r["path"]) + ("" if r["frame"] is None else f" (frame {r['frame']})"))
        items.append(f'<tr><td><a href="{panel}"><img loading="lazy" src="{panel}" alt="panel"></a></td>'
                     f'<td><img loading="lazy" src="{ov}" alt="overlay"></td><td>{label}</td>'
                     f'<td>{html.escape(r["predicted"])}</td><td data-v="{r["probability"]:.6f}">{r["probability"]:.3f}</td>'
                     f'<td>{html.escape(r["true_label"] or "")}</td></tr>')
    acc = (meta.get("validation_metrics") or {}).get("accuracy")
    page = _PAGE.format(n=len(items), model=html.escape(meta.get("model_file", "")), kind=html.escape(str(meta.get("model_kind"))),
                        method=html.escape(str(rows[0].get("explain")) if rows else ""),
                        acc="unknown" if acc is None else f"{acc:.3f}", rows="\n".join(items))
    path = out / "index.html"
    write_text_atomic(path, page)
    return path
