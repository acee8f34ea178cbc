"""Dropout with a cheaper mask on a CPU (``fast_dropout``).

torch draws a CPU dropout mask with ``bernoulli_``, which costs about twice a uniform draw of the same
size; in a whole-sequence step of these small models the masks were 11-15% of the step on an Intel Xeon
(docs/speed.md). ``FastDropout`` draws U[0, 1) and keeps an element where the draw is at least p: the
same distribution (keep probability 1 - p, to float32's resolution of 2^-24), the same scaling of the kept
elements by 1 / (1 - p) and the same gradient, from other random numbers. On a GPU torch's dropout is one
fused kernel where this is three, so ``auto`` draws the uniform mask for CPU tensors only, decided per call
by the input's device (a model trained on a GPU and fine-tuned on a CPU gets the fast mask there).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is a uniform draw compared with p, on the device types ``on`` (None: all)."""

    def __init__(self, p: float = 0.5, on: tuple[str, ...] | None = ("cpu",)):
        super().__init__(p)
        self.on = on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.p >= 1 or (self.on is not None and x.device.type not in self.on):
            return super().forward(x)
        scale = torch.rand(x.shape, device=x.device).ge_(self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * scale

    def extra_repr(self) -> str:
        return f"p={self.p}, on={'every device' if self.on is None else ', '.join(self.on)}"


def use_fast_dropout(model: nn.Module, setting) -> None:
    """Replace every ``nn.Dropout`` of ``model`` (its own and those inside RecBole's layers) by a
    ``FastDropout`` of the same p, for ``fast_dropout`` = ``setting``: True on every device, ``auto`` on a
    CPU only, False none. Dropout holds no state, so checkpoints are the same either way."""
    if setting is False:
        return
    on = None if setting is True else ("cpu",)
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Dropout and not m.inplace]
    for name, module in targets:
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, FastDropout(module.p, on))
