"""The ensemble as ONNX (``brisc.export.ensemble`` builds and checks it): the head that writes ``combine`` as graph
operations, the nodes that run a member on the scans and their mirrors at once, and ``compose``, which joins the
members and the head into one graph reading one ``pixel_values``."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np


def _head_module(temperatures, thresholds, heatmap: str, temperature: float, has_ood: bool):
    import torch
    from torch import nn

    from brisc.export.wrapper import HeatmapSpec, _scale

    spec = HeatmapSpec.parse(heatmap)

    class EnsembleHead(nn.Module):
        """``brisc.export.ensemble.combine`` as graph operations: per member (logits, heatmap, attentions, rollout[, ood_score])."""

        def __init__(self):
            super().__init__()
            self.register_buffer("inv_t", torch.tensor([1.0 / t for t in temperatures], dtype=torch.float64))
            self.register_buffer("inv_thr", torch.tensor([1.0 / t for t in thresholds] if has_ood else [],
                                                         dtype=torch.float64))
            self.per = 5 if has_ood else 4

        def forward(self, *xs):
            m = [xs[i:i + self.per] for i in range(0, len(xs), self.per)]
            g = m[0][1].shape[-1]
            logits = torch.stack([o[0].double() * self.inv_t[i] for i, o in enumerate(m)]).mean(0)
            probs = torch.softmax(logits / temperature, -1)
            depth = min(o[2].shape[1] for o in m)  # members of different depth: their last layers side by side
            att = torch.cat([o[2][:, -depth:] for o in m], 2)  # [B, L, sum H, patches]
            if spec.method == "cls":
                rows = att[:, spec.layer].double()
                heat = _scale(rows.mean(1) if spec.head_fusion == "mean" else rows.amax(1), g, torch.float32)
            else:
                heat = torch.stack([o[1] for o in m]).mean(0)
            roll = torch.stack([o[3] for o in m]).mean(0)
            out = (logits.float(), probs.float(), heat, att, roll)
            if self.per == 5:
                out += ((torch.stack([o[4].double() * self.inv_thr[i] for i, o in enumerate(m)]).mean(0)).float(),)
            return out

    return EnsembleHead().eval()


def head_graph(members: list[dict[str, np.ndarray]], names: list[str], temperatures, thresholds, heatmap: str,
               temperature: float, opset: int):
    """The head as an ONNX model whose inputs are named ``m{i}/<output>``, traced on the members' outputs."""
    import torch

    has_ood = "ood_score" in names
    module = _head_module(temperatures, thresholds, heatmap, temperature, has_ood)
    ins = [f"m{i}/{n}" for i in range(len(members)) for n in names]
    example = tuple(torch.from_numpy(o[n][:2]) for o in members for n in names)
    batch = torch.export.Dim("batch", min=1, max=4096)
    outs = ["logits", "probabilities", "heatmap", "attentions", "rollout"] + (["ood_score"] if has_ood else [])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress chatter
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, example, input_names=ins, output_names=outs, opset_version=opset,
                                 dynamo=True, external_data=False, verbose=False,
                                 dynamic_shapes=(tuple({0: batch} for _ in ins),))  # one entry: forward(*xs)
    return prog.model_proto


def _mirror_nodes(i: int, j: int, names: list[str], grid: int):
    """Nodes around member ``i`` (prefixed ``m{i}/raw/``) that run it once on the scans and their mirrors, a batch of
    2B: the first B outputs are view ``i``'s, the last B, flipped back (``mirror_back`` as graph operations), view
    ``j``'s, as ``m{i}/<output>`` and ``m{j}/<output>``."""
    from onnx import helper

    raw, p = f"m{i}/raw/", f"m{i}/mirror/"

    def node(op, ins, out, **kw):
        return helper.make_node(op, ins, [out], name=f"{p}{op}_{out.replace('/', '_')}", **kw)

    def flip(src, dst, axis):
        return node("Slice", [src, "mirror/last", "mirror/before_first", f"mirror/axis{axis}", "mirror/back"], dst)

    nodes = [flip("pixel_values", f"{p}pixel_values", 3),
             node("Concat", ["pixel_values", f"{p}pixel_values"], f"{raw}pixel_values", axis=0)]
    for n in names:
        nodes += [node("Slice", [f"{raw}{n}", "mirror/zero", "mirror/batch", "mirror/axis0"], f"m{i}/{n}"),
                  node("Slice", [f"{raw}{n}", "mirror/batch", "mirror/end", "mirror/axis0"], f"{p}{n}")]
        if n in ("heatmap", "rollout"):  # [B, g, g]
            nodes.append(flip(f"{p}{n}", f"m{j}/{n}", 2))
        elif n == "attentions":  # [B, L, H, g*g] -> [B, L, H, g, g], flipped, back
            nodes += [node("Reshape", [f"{p}{n}", "mirror/grid"], f"{p}{n}_grid"),
                      flip(f"{p}{n}_grid", f"{p}{n}_flipped", 4),
                      node("Reshape", [f"{p}{n}_flipped", "mirror/flat"], f"m{j}/{n}")]
        else:  # logits, ood_score: the same in either frame
            nodes.append(node("Identity", [f"{p}{n}"], f"m{j}/{n}"))
    return nodes


def _mirror_constants(grid: int):
    from onnx import helper, numpy_helper

    big = np.iinfo(np.int64)
    consts = {"mirror/last": [-1], "mirror/before_first": [big.min], "mirror/back": [-1], "mirror/zero": [0],
              "mirror/end": [big.max], "mirror/axis0": [0], "mirror/axis2": [2], "mirror/axis3": [3],
              "mirror/axis4": [4], "mirror/grid": [0, 0, 0, grid, grid], "mirror/flat": [0, 0, 0, grid * grid]}
    batch = [helper.make_node("Shape", ["pixel_values"], ["mirror/batch"], name="mirror/batch", start=0, end=1)]
    return [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()], batch


def compose(members: list, head, mirror: bool = False, names: list[str] = (), grid: int = 0):
    """One graph: every member (its names prefixed ``m{i}/``) reading the shared ``pixel_values``, then the head;
    with ``mirror``, each member runs once on the scans and their mirrors (``_mirror_nodes``), the mirrors being
    views ``len(members) + i``."""
    from onnx import compose as oc, helper

    parts, extra = [], []
    consts, batch = _mirror_constants(grid) if mirror else ([], [])
    for i, m in enumerate(members):
        p = oc.add_prefix(m, f"m{i}/raw/" if mirror else f"m{i}/")
        if mirror:
            extra += _mirror_nodes(i, len(members) + i, names, grid)
        else:
            for n in p.graph.node:
                n.input[:] = ["pixel_values" if x == f"m{i}/pixel_values" else x for x in n.input]
        parts.append(p)
    opsets = {}
    for p in parts + [head]:
        for o in p.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    graph = helper.make_graph(batch + [n for p in parts for n in p.graph.node] + extra + list(head.graph.node),
                              "brisc_ensemble", [members[0].graph.input[0]], list(head.graph.output),
                              [t for p in parts + [head] for t in p.graph.initializer] + consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              functions=[f for p in parts + [head] for f in p.functions])
    model.ir_version = max(p.ir_version for p in parts + [head])
    return model
