"""brisc-infer's outputs: overlays, panels, the gallery, and the paths they are written to."""

import json
from dataclasses import replace

import numpy as np
from PIL import Image

from brisc.inference.heatmap import colorize
from brisc.inference.outputs import output_path
from brisc.maps import resize_map
from brisc.sidecar import read_sidecar
from conftest import gallery_data, prediction_rows, run_cli

INFER = "brisc.inference.cli"


def test_output_paths_never_leave_out(tmp_path):
    out = tmp_path / "o"
    for rel in ("../../etc/passwd", "/etc/passwd", "a/../../b.png", "..", "ok/x.png"):
        p = output_path(out, "heatmaps", rel, ".png")
        assert p.resolve().is_relative_to(out.resolve()), rel


def test_overlay_is_the_scan_with_the_map_faded_in_where_it_is_high(tiny_export, synth_root, tmp_path):
    scans = synth_root / "classification_task" / "test" / "meningioma"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", "--save-maps", "--quiet",
            "--alpha", "0.5")
    for scan in sorted(scans.glob("*.jpg")):
        png = Image.open(out / "heatmaps" / f"{scan.stem}.png")  # an attention PNG, no doubled extension
        assert png.format == "PNG" and png.mode == "P"
        ov = np.asarray(png.convert("RGB"), np.float64)
        src = np.asarray(Image.open(scan).convert("RGB"), np.float64)
        assert ov.shape == src.shape  # drawn at the scan's own resolution (256 px <= OVERLAY_MAX)
        m = np.load(out / "heatmaps" / f"{scan.stem}.npy")
        assert m.shape == (14, 14) and 0 <= m.min() and m.max() <= 1
        up = np.clip(resize_map(m, src.shape[:2]), 0, 1)[..., None]
        a = 0.5 * up  # opacity follows the map: the scan shows untinted where the map is low
        expected = (1 - a) * src + a * colorize(up[..., 0])
        assert np.abs(ov - expected).mean() <= 3.0  # 256-colour palette and 8-bit rounding
        hi, lo = up[..., 0] > np.quantile(up, 0.9), up[..., 0] < 0.05
        tint_hi, tint_lo = np.abs(ov - src)[hi].mean(), np.abs(ov - src)[lo].mean()
        assert tint_hi > 8 and tint_hi > 3 * tint_lo  # tinted at the map's top tenth, nearly untouched where it is low
        assert not (out / "heatmaps" / f"{scan.stem}.panel.png").exists()  # panels only with --panels
    # One file a scan (the gallery scales the overlay down): heatmaps/ holds the overlays and the raw maps only.
    stems = sorted(p.stem for p in scans.glob("*.jpg"))
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == sorted(f"{s}{x}" for s in stems for x in (".npy", ".png"))
    assert not (out / "thumbnails").exists()


def test_heatmap_files_stay_small_and_panels_come_on_request(tiny_export, synth_root, tmp_path):
    """~12 KB a scan by default, one file (the goal is <= 100 KB); --panels adds the labelled side-by-side PNG."""
    scans = synth_root / "classification_task" / "test"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", "--panels", "--quiet",
            "--masks", synth_root / "segmentation_task" / "test" / "masks")
    rows = prediction_rows(out)
    assert max((out / r["heatmap"]).stat().st_size for r in rows) <= 100_000
    for r in rows:
        assert max(Image.open(out / r["heatmap"]).size) <= 256  # the overlay stays small with --panels too
        pn = Image.open(out / r["panel"])
        pn.load()
        src = Image.open(scans / r["path"])
        assert pn.size[0] >= 2 * src.size[0] * 448 // src.size[1]  # scan | overlay at the scan's aspect ratio
    s = json.loads((out / "summary.json").read_text())
    assert s["masks"]["pointing_chance"] < s["masks"]["mask_area_fraction"] * 10  # chance: near the mask's share
    assert "a point picked at random" in s["masks"]["explanation"]
    data = gallery_data(out / "index.html")
    assert len(data["rows"]) == len(rows) and data["masks"] is True


def test_gallery_escapes_names_filters_and_shows_this_runs_confusion(tiny_export, tmp_path):
    from brisc.inference.gallery import write_gallery

    evil = "</script><script>alert(1)</script>\n<b>.jpg"
    rows = [{"path": evil if i == 0 else f"s{i}.jpg", "frame": None, "predicted": "glioma", "probability": 0.5 + i / 100,
             "true_label": "glioma" if i % 2 else "meningioma", "correct": bool(i % 2), "explain": "cls",
             "pointing_hit": None, "energy_in_mask": None, "heatmap": f"heatmaps/s{i}.jpg", "panel": None}
            for i in range(5)]
    summary = {"ground_truth": {"n": 5, "accuracy": 0.4, "macro_f1": 0.3, "classes": ["glioma", "meningioma"],
                                "confusion": [[2, 0], [3, 0]]}}
    card = replace(read_sidecar(tiny_export / "vit.onnx"), validation_metrics={"accuracy": 0.96})
    page = write_gallery(tmp_path, rows, card, summary).read_text()
    assert "<script>alert(1)" not in page and "<b>" not in page  # names reach the page as JSON text only
    data = gallery_data(tmp_path / "index.html")
    assert data["rows"][0][0] == evil.replace("\n", "\\x0a")  # control characters shown escaped
    assert [r[4] for r in data["rows"]] == [False, True, False, True, False]
    for control in ('id="wrong"', 'id="pred"', 'id="truth"', 'id="pmin"', 'id="pmax"', 'id="miss"', 'id="sort"',
                    'class="pager"'):
        assert control in page, control
    assert "this run's accuracy is 0.400" in page and "validation split the model scored 0.960" in page
    assert "true \u2193 / predicted \u2192" in page
    assert 'data-t="meningioma" data-p="glioma">3<' in page


def test_panel_keeps_the_aspect_ratio_and_outlines_the_mask():
    from brisc.inference.heatmap import overlay, panel

    scan = Image.new("L", (300, 150), 40)
    mask = np.zeros((150, 300), bool)
    mask[50:100, 100:200] = True
    m = np.zeros((14, 14))
    ov = overlay(scan, m)
    with_mask = np.asarray(panel(scan, ov, label="glioma", probability=0.9, method="cls", truth="meningioma", mask=mask))
    without = np.asarray(panel(scan, ov, label="glioma", probability=0.9, method="cls", truth="meningioma"))
    assert with_mask.shape == without.shape and with_mask.shape[1] >= 2 * 896  # 448 px high, twice as wide
    changed = np.abs(with_mask.astype(int) - without).sum(-1) > 0
    ys, xs = np.nonzero(changed[64:64 + 448])  # the image row band, below the title
    assert ys.min() >= 448 // 3 - 4 and ys.max() <= 2 * 448 // 3 + 4  # only the outline around the mask changed
    assert (with_mask[64:64 + 448][changed[64:64 + 448]] == 255).all()  # drawn in white


def test_cli_colour_maps_are_the_renderers_and_panels_need_heatmaps(tiny_export, synth_root, tmp_path):
    from brisc.inference.cli import CMAPS
    from brisc.inference.heatmap import COLORMAPS

    assert CMAPS == COLORMAPS and "gray" not in CMAPS  # grey on a grey scan reads as enhancement
    scans = synth_root / "classification_task" / "test" / "glioma"
    run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", tmp_path / "o", "--panels")  # implies it
    assert len(list((tmp_path / "o" / "heatmaps").rglob("*.panel.png"))) == 3 and (tmp_path / "o" / "index.html").is_file()


def test_panel_colour_bar_fades_to_clear_and_names_the_scan():
    from brisc.inference.heatmap import overlay, panel, plain_method

    scan = Image.new("L", (200, 200), 40)
    pn = np.asarray(panel(scan, overlay(scan, np.zeros((14, 14))), label="glioma", probability=0.9,
                          method="cls:layer=6", name="a/b.jpg", runner_up=("meningioma", 0.05), pointing_hit=True))
    bar_x = 3 * 12 + 2 * 448 + 9  # the bar's middle column: pad 12, two 448-px images
    bottom, top = pn[64 + 447, bar_x].astype(int), pn[64, bar_x].astype(int)
    assert np.abs(bottom - 128).max() <= 2  # clear at "min": mid-grey, as low values are drawn
    assert np.abs(top - 128).max() > 40  # the colour at "max"
    assert "layer 6" in plain_method("cls:layer=6") and "cls" not in plain_method("cls:layer=6")
