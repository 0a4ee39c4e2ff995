"""DeiT-style hard distillation (Touvron et al. 2021): the [DIST] token's head learns a teacher's predictions.

The teacher is any trained brisc model, named by its model folder (``RUN/KIND``, e.g. a run's stacked autoencoder
or a stronger ViT); it sees the same augmented (and CutMixed) batch as the student, in eval mode, without
gradients. Loss: half cross-entropy of the [CLS] head with the labels, half of the [DIST] head with the
teacher's top class.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brisc.runfolder import RunFolder
from brisc.train import checkpoint as ckpt
from brisc.train.mixing import mixed_cross_entropy


def load_teacher(spec: str, device: torch.device | str = "cpu") -> nn.Module:
    """``RUN/KIND`` (a brisc-train model folder) -> that trained model, in eval mode, frozen, on ``device``."""
    folder = Path(spec)
    if not RunFolder(folder.parent).has_model(folder.name):
        raise FileNotFoundError(f"{spec}: not a trained brisc model folder "
                                "(expected RUN/KIND, e.g. artifacts/runs/x/sae)")
    return ckpt.load_model(folder.parent, folder.name).requires_grad_(False).to(device)


def check_distillation(model: nn.Module, teacher: str) -> None:
    """ValueError unless a [DIST] token comes with a teacher that loads, and a teacher with a [DIST] token."""
    has_token = bool(getattr(getattr(model, "config", None), "distill_token", False))
    if has_token != bool(teacher):
        raise ValueError("distill_token=true and distill_from=RUN/KIND go together (the [DIST] head learns the "
                         "teacher's predictions)")
    if teacher:
        try:
            load_teacher(teacher)
        except (OSError, RuntimeError, KeyError) as e:
            raise ValueError(f"{teacher}: {str(e).splitlines()[0][:160]}") from None


def distillation_loss(head_logits: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor, teacher_logits: torch.Tensor,
                      partner: torch.Tensor | None = None, lam: float = 1.0,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """0.5 x CE([CLS] head, labels; CutMix-weighted) + 0.5 x CE([DIST] head, the teacher's argmax)."""
    cls, dist = (h.float() for h in head_logits)
    return 0.5 * mixed_cross_entropy(cls, y, partner, lam, label_smoothing) + 0.5 * F.cross_entropy(
        dist, teacher_logits.argmax(1))
