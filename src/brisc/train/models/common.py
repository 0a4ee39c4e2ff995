"""What every brisc model returns, and the errors model builders raise."""

from __future__ import annotations

from brisc.errors import BriscError

from dataclasses import dataclass

import torch


@dataclass
class ClassifierOutput:
    """Named outputs (no positional tuples)."""

    logits: torch.Tensor  # [B, classes]
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, heads, 1+N, 1+N]; ViTs only
    head_logits: tuple[torch.Tensor, torch.Tensor] | None = None  # distillation ViTs: ([CLS] head, [DIST] head)
    features: torch.Tensor | None = None  # [B, D] what the head reads (normalised [CLS]; the SAE's code): OOD scores


class ModelLoadError(BriscError):
    """A model that cannot be built or loaded; the message says what to do."""
