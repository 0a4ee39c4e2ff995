"""Does the model's own conv stem, at 28x28 or 56x56, place the 14x14 [CLS] map's mass better inside the masks?

    python scripts/stem_maps.py --run artifacts/runs/oe-seed2 [--train 300] [--slack 0.01]

For a ViT with the conv stem (the `cpu` preset), in PyTorch: the last layer's [CLS] map (the guided map the graphs
export), upsampled bilinearly (what brisc-infer scores) and refined by ``brisc.maps.stem_refine`` on the stem's
activation after its second or third stride-2 stage, over a grid of power. The setting is chosen on training masks
(by energy, pointing at most ``--slack`` below bilinear's) and reported on the validation masks, per class; every
setting's validation figures follow, for the record.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from brisc.data import load_mask
from brisc.imageio import load
from brisc.maps import resize_map, stem_refine
from brisc.metrics import energy_in_mask, pointing_game
from brisc.runfolder import RunFolder
from map_study import choose_and_report, masked_samples
from brisc.train.checkpoint import load_model
from brisc.train.explain import explanation_maps

GRID = [(cells, power) for cells in (28, 56) for power in (1.0, 2.0, 4.0)]


def stem_activations(model) -> dict[int, torch.Tensor]:
    """Hooks on the conv stem's stages -> {cells: the latest batch's activation, mean over channels [B, cells, cells]}."""
    from brisc.train.models.vit import ConvStem

    stem = model.patch_embed
    if not isinstance(stem, ConvStem):
        raise SystemExit("stem_maps: the run's ViT has no conv stem (vit.stem=conv): nothing finer to refine with")
    acts: dict[int, torch.Tensor] = {}
    relus = [m for m in stem.convs if isinstance(m, torch.nn.ReLU)]  # one a stride-2 stage: 112, 56, 28, 14
    for relu in relus[1:3]:
        relu.register_forward_hook(lambda mod, i, out: acts.__setitem__(out.shape[-1], out.detach().float().mean(1)))
    return acts


def scores(samples, model, acts, settings) -> dict:
    """{setting: (pointing hits [N], energies [N])} with "bilinear" beside the refined settings."""
    out = {k: ([], []) for k in ["bilinear", *settings]}
    for i in range(0, len(samples), 32):
        chunk = samples[i:i + 32]
        maps = explanation_maps(model, torch.from_numpy(np.stack([load(s.path) for s in chunk])))["cls"]
        for j, (s, m) in enumerate(zip(chunk, maps)):
            mask = load_mask(s.mask)
            for k in out:
                fine = m if k == "bilinear" else stem_refine(m, acts[k[0]][j].numpy(), power=k[1])
                up = resize_map(fine, mask.shape)
                out[k][0].append(pointing_game(up, mask))
                out[k][1].append(energy_in_mask(up, mask))
    return {k: (np.asarray(p, float), np.asarray(e, float)) for k, (p, e) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a brisc-train run whose ViT has the conv stem")
    ap.add_argument("--train", type=int, default=300, help="training masks to choose the setting on (every k-th)")
    ap.add_argument("--slack", type=float, default=0.01, help="how much training pointing the chosen setting may lose")
    a = ap.parse_args()
    rf = RunFolder(a.run)
    model = load_model(rf.root, "vit").eval()
    acts = stem_activations(model)
    tr, va = masked_samples(rf, a.train)
    out = choose_and_report(lambda samples, settings: scores(samples, model, acts, settings), tr, va, GRID,
                            slack=a.slack, every=True,
                            name=lambda k: k if k == "bilinear" else f"stem {k[0]}x{k[0]}, power {k[1]:g}")
    if out is not None:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
