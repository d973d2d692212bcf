"""Telemetry on CUDA: the scale is copied to the host asynchronously, so recording adds no synchronisation.

Runs only where a CUDA device is present. With a fused optimizer a GradScaler step itself never waits for
the device, so torch's sync debug mode, set to raise, proves that recording a step does not either.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mixprec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _step(precision: object, model: nn.Module, optimizer: torch.optim.Optimizer, overflow: bool) -> None:
    inputs = torch.randn(8, 16, device="cuda")
    if overflow:
        inputs[0, 0] = math.inf
    optimizer.zero_grad()
    with precision.forward_context():  # type: ignore[attr-defined]
        loss = model(inputs).float().pow(2).mean()
    precision.backward(loss, model)  # type: ignore[attr-defined]
    precision.optimizer_step(optimizer)  # type: ignore[attr-defined]


def test_skipped_steps_are_counted_on_cuda_with_a_fused_optimizer_without_synchronising() -> None:
    precision = mixprec.get_precision("16-mixed", "cuda", init_scale=1024.0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    _step(precision, model, optimizer, False)  # first use: lazy initialisation may synchronise

    torch.cuda.set_sync_debug_mode("error")
    try:
        for overflow in (True, False, True, True):
            _step(precision, model, optimizer, overflow)
    finally:
        torch.cuda.set_sync_debug_mode("default")

    assert precision.telemetry == mixprec.Telemetry(
        steps=5, skipped_steps=3, consecutive_skips=2, last_step_skipped=True, last_overflow_step=4, scale=128.0
    )
