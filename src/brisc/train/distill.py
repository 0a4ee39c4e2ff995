"""DeiT-style distillation (Touvron et al. 2021): the [DIST] token's head learns a teacher's predictions.

The teacher is any trained brisc model, named by its model folder (``RUN/KIND``, e.g. a run's stacked autoencoder
or a stronger ViT), or an exported brisc graph (``*.onnx``, e.g. the shipped default, whose PyTorch weights are
not kept), run by onnxruntime. It sees the same augmented (and CutMixed) batch as the student, in eval mode,
without gradients. Loss: half cross-entropy of the [CLS] head with the labels, half of the [DIST] head with the
teacher: its top class (DeiT's hard form, ``tau=0``) or its distribution at temperature ``tau`` (the soft form).
A teacher trained on the same images agrees with their labels almost everywhere (the shipped graph misses 7 of
the 4,499 training labels: docs/results.md), so its hard form teaches little beyond the labels.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from brisc import CLASSES
from brisc.errors import BriscError
from brisc.imageio import DEFAULT as PREP
from brisc.runfolder import RunFolder
from brisc.train import checkpoint as ckpt
from brisc.train.mixing import mixed_cross_entropy


class GraphTeacher:
    """An exported brisc graph as a teacher: ``teacher(x).logits`` as a trained model's, from onnxruntime."""

    def __init__(self, path: str):
        from brisc.inference.session import open_session

        # Not spinning: the session's idle threads would take the cores from the student's training step.
        self.session = open_session(path, spin=False)
        card = self.session.card
        if card.preprocessing != PREP or list(card.classes) != list(CLASSES):
            raise ValueError(f"the graph expects {card.preprocessing} and classes {list(card.classes)}; "
                             f"brisc-train feeds {PREP} and {list(CLASSES)}")

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        logits = self.session.run(x.detach().float().cpu().numpy(), ["logits"])["logits"]
        return SimpleNamespace(logits=torch.from_numpy(logits).to(x.device))


def load_teacher(spec: str, device: torch.device | str = "cpu") -> nn.Module | GraphTeacher:
    """``RUN/KIND`` (a brisc-train model folder) -> that trained model, in eval mode, frozen, on ``device``;
    ``*.onnx`` (a brisc-export graph with its sidecar) -> a ``GraphTeacher``."""
    if spec.endswith(".onnx"):
        return GraphTeacher(spec)
    folder = Path(spec)
    if not RunFolder(folder.parent).has_model(folder.name):
        raise FileNotFoundError(f"{spec}: not a trained brisc model folder "
                                "(expected RUN/KIND, e.g. artifacts/runs/x/sae)")
    return ckpt.load_model(folder.parent, folder.name).requires_grad_(False).to(device)


def check_distillation(model: nn.Module, teacher: str) -> None:
    """ValueError unless a [DIST] token comes with a teacher that loads, and a teacher with a [DIST] token."""
    has_token = bool(getattr(getattr(model, "config", None), "distill_token", False))
    if has_token != bool(teacher):
        raise ValueError("distill_token=true and distill_from=RUN/KIND (or GRAPH.onnx) go together (the [DIST] head "
                         "learns the teacher's predictions)")
    if teacher:
        try:
            load_teacher(teacher)
        except (OSError, RuntimeError, KeyError, ValueError, BriscError) as e:
            msg = str(e).splitlines()[0][:160]
            raise ValueError(msg if msg.startswith(teacher) else f"{teacher}: {msg}") from None


def distillation_loss(head_logits: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor, teacher_logits: torch.Tensor,
                      partner: torch.Tensor | None = None, lam: float = 1.0,
                      label_smoothing: float = 0.0, tau: float = 0.0) -> torch.Tensor:
    """0.5 x CE([CLS] head, labels; CutMix-weighted) + 0.5 x the [DIST] head's loss: CE with the teacher's argmax
    (``tau=0``), or tau^2 x KL(teacher || student) of the distributions at temperature ``tau`` (Hinton et al. 2015:
    tau^2 keeps the gradient's scale as tau changes)."""
    cls, dist = (h.float() for h in head_logits)
    if tau > 0:
        taught = tau * tau * F.kl_div(F.log_softmax(dist / tau, 1), F.log_softmax(teacher_logits.float() / tau, 1),
                                      reduction="batchmean", log_target=True)
    else:
        taught = F.cross_entropy(dist, teacher_logits.argmax(1))
    return 0.5 * mixed_cross_entropy(cls, y, partner, lam, label_smoothing) + 0.5 * taught
