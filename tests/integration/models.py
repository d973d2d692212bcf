"""Small models and data shared by the integration tests: each trains in milliseconds on a CPU."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FEATURES", "flat_weights", "make_model", "regression_data"]

FEATURES = 16


def make_model(seed: int = 0) -> nn.Sequential:
    """A two-layer regression network, the same for the same seed."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 1))


def regression_data(seed: int = 0, size: int = 32) -> tuple[Tensor, Tensor]:
    """Inputs and targets of a noisy linear function, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, FEATURES, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(size, 1, generator=generator)
    return inputs, targets


def flat_weights(module: nn.Module) -> Tensor:
    """Every parameter of ``module`` in one detached fp32 vector, for comparing states."""
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])
