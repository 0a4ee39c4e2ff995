"""An exponential moving average of a model's weights (Polyak averaging), the model that is evaluated and shipped.

Parameters and floating-point buffers (the conv stem's BatchNorm statistics) are averaged; integer buffers are
copied. The decay warms up as (1 + n) / (10 + n) after n updates, as in timm's ModelEma, so the first epochs'
average is not dominated by the random initialisation.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step toward ``model``'s weights (the unwrapped model, the same architecture)."""
        self.updates += 1
        keep = self.current_decay()
        for avg, now in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(now.detach(), 1.0 - keep)
            else:
                avg.copy_(now)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
