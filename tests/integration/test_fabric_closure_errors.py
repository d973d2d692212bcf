"""A closure that raises in "16-mixed" Fabric leaves the GradScaler as before the step, so training goes on."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric import Fabric
from torch import nn

import mixprec
from tests.integration.models import make_model, regression_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_a_step_after_a_closure_that_clipped_then_raised_clips_and_steps(fused: bool) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[mixprec.get_precision("16-mixed", "cpu", init_scale=256.0)])
    network = make_model()
    model, optimizer = fabric.setup(network, torch.optim.AdamW(network.parameters(), lr=1e-2, fused=fused))
    inputs, targets = regression_data()

    def closure(fail: bool) -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=1.0)
        if fail:
            raise RuntimeError("a bad batch")
        return loss

    with pytest.raises(RuntimeError, match="a bad batch"):
        optimizer.step(lambda: closure(fail=True))
    before = [p.detach().clone() for p in model.parameters()]
    loss = optimizer.step(lambda: closure(fail=False))

    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
