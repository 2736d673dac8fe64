"""An exponential moving average of the generator's weights, for evaluation and export."""

from __future__ import annotations

import copy

import torch


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used at `step`: min(decay, (1 + step) / (10 + step)), so early averages forget the random start."""
    return min(decay, (1.0 + step) / (10.0 + step))


class GeneratorEma:
    """A frozen copy of the generator whose weights trail the trained ones.

    `update` runs a few fused foreach kernels on the device and never waits on the host.
    """

    def __init__(self, generator: torch.nn.Module):
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)
        self._params = [p for p in self.module.parameters()]
        self._buffers = [b for b in self.module.buffers()]

    @torch.no_grad()
    def update(self, generator: torch.nn.Module, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * weights (buffers are copied)."""
        params = [p.detach() for p in generator.parameters()]
        torch._foreach_lerp_(self._params, params, 1.0 - decay)
        for mine, theirs in zip(self._buffers, generator.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
