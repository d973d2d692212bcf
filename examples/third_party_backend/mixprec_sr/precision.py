"""The precision object: Lightning's "bf16-true", with each optimizer step rounded to bfloat16 stochastically.

In plain "bf16-true" the optimizer adds each update to bfloat16 weights and rounds to nearest: an
update smaller than half the spacing of bfloat16 numbers near a weight (0.2% to 0.4% of the weight)
is lost entirely, so training with a small learning rate stalls. Here the step runs in float32 on
float32 copies of the weights and gradients, and the new weights are rounded up or down at random,
with the probabilities that make the rounding exact on average: small updates add up as they would
in float32. Weights, gradients and activations stay bfloat16; the optimizer's state is float32.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins.precision import HalfPrecision
from lightning.fabric.utilities.types import Optimizable
from typing_extensions import override

from mixprec import PrecisionError
from mixprec.precision import ScalerGuard

__all__ = ["StochasticRoundingPrecision", "stochastic_round"]

_LOW_BITS = 1 << 16  # float32 bits that bfloat16 drops


def stochastic_round(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` (float32) rounded to one of its two bfloat16 neighbours, up with probability equal to the distance down.

    bfloat16 is the upper half of float32's bits: adding uniform noise below that half and cutting
    it off rounds the magnitude up with exactly that probability. NaN and infinities pass unchanged.
    """
    # One random int64 holds the noise of two elements: half the random draws of an int32 per element.
    draws = torch.empty((x.numel() + 1) // 2, dtype=torch.int64, device=x.device).random_(generator=generator)
    noise = draws.view(torch.int32)[: x.numel()].view(x.shape).bitwise_and_(_LOW_BITS - 1)
    rounded = (x.view(torch.int32) + noise).bitwise_and_(-_LOW_BITS).view(torch.float32)
    return torch.where(x.isnan(), x, rounded).to(torch.bfloat16)


class StochasticRoundingPrecision(ScalerGuard, HalfPrecision):
    """Lightning's ``HalfPrecision("bf16-true")`` whose ``optimizer_step`` rounds the new weights stochastically.

    :class:`~mixprec.precision.ScalerGuard` makes it refuse GradScaler state given to ``load_state_dict``
    where Lightning's class ignores it.

    Args:
        seed: seeds the rounding noise, so that a run can be repeated exactly.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__("bf16-true")
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    @override
    def optimizer_step(self, optimizer: Optimizable, **kwargs: Any) -> Any:
        if isinstance(optimizer, torch.optim.LBFGS):
            raise PrecisionError(
                "LBFGS re-evaluates the model inside its step, which 'bf16-true' with stochastic rounding runs on"
                " float32 copies of the weights: use another optimizer, or backend='core' for plain 'bf16-true'."
            )
        closure = kwargs.pop("closure", None)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        narrow = _widen(optimizer)
        try:
            # Through ScalerGuard's optimizer_step, which records the step in ``telemetry`` and calls optimizer.step.
            super().optimizer_step(optimizer, **kwargs)
        except BaseException:
            for param, (data, grad) in narrow.items():
                param.data, param.grad = data, grad
            raise
        for param, (data, grad) in narrow.items():
            data.copy_(stochastic_round(param.data, self._generator(data.device)))
            param.data, param.grad = data, grad
        return loss

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = self._generators.get(device)
        if generator is None:
            generator = torch.Generator(device).manual_seed(self.seed)
            self._generators[device] = generator
        return generator


def _widen(optimizer: Optimizable) -> dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Give each bfloat16 parameter with a gradient float32 copies of its data and gradient; return the originals."""
    narrow = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.dtype == torch.bfloat16 and param.grad is not None:
                narrow[param] = (param.data, param.grad)
                param.data, param.grad = param.data.float(), param.grad.float()
    return narrow
