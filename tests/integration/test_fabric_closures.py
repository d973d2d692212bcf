"""``optimizer.step(closure)`` in real Fabric loops in "16-mixed" on the CPU.

torch's ``GradScaler.step`` takes no closure; mixprec's objects run the closure, then step through the
scaler, as the Trainer's classes do. LBFGS, which evaluates its closure several times in one step, is
refused before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from torch import Tensor, nn

import mixprec
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]

#: A small initial scale, so that no step overflows float16 and gets skipped unless a test makes it.
INIT_SCALE = 256.0
STEPS = 3


def fabric_16_mixed() -> Fabric:
    return Fabric(
        accelerator="cpu", devices=1, plugins=[mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE)]
    )


def set_up(optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW) -> tuple[Fabric, nn.Module, Any]:
    fabric = fabric_16_mixed()
    network = make_model()
    model, wrapped = fabric.setup(network, optimizer(network.parameters(), lr=1e-2))
    return fabric, model, wrapped


def closure_for(
    fabric: Fabric, model: nn.Module, optimizer: Any, inputs: Tensor, calls: list[Tensor]
) -> Callable[[], Tensor]:
    """Lightning's "build your own trainer" closure: zero the gradients, forward, backward, return the loss."""
    targets = regression_data()[1][: len(inputs)]

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        fabric.backward(loss)
        calls.append(loss)
        return loss

    return closure


def test_fabric_steps_with_a_closure_in_16_mixed_as_it_steps_after_backward() -> None:
    inputs = regression_data()[0]
    with_closure, without = set_up(), set_up()
    calls: list[Tensor] = []

    for _ in range(STEPS):
        fabric, model, optimizer = with_closure
        optimizer.step(closure_for(fabric, model, optimizer, inputs, calls))
        fabric, model, optimizer = without
        closure_for(fabric, model, optimizer, inputs, [])()
        optimizer.step()

    assert len(calls) == STEPS
    assert calls[-1] < calls[0]
    assert torch.equal(flat_weights(with_closure[1]), flat_weights(without[1]))


def test_a_closure_step_in_16_mixed_returns_the_closures_loss() -> None:
    fabric, model, optimizer = set_up()
    calls: list[Tensor] = []

    result = optimizer.step(closure_for(fabric, model, optimizer, regression_data()[0], calls))

    assert calls
    assert result is calls[-1]


def test_a_closure_runs_with_gradients_enabled_when_the_step_is_called_without() -> None:
    fabric, model, optimizer = set_up()
    closure = closure_for(fabric, model, optimizer, regression_data()[0], [])
    modes: list[bool] = []

    def recording() -> Tensor:
        modes.append(torch.is_grad_enabled())
        return closure()

    with torch.no_grad():
        optimizer.step(recording)

    assert modes == [True]


def test_a_closure_step_whose_gradients_overflowed_is_skipped_and_backs_off_the_scale() -> None:
    fabric, model, optimizer = set_up(torch.optim.SGD)
    inputs = regression_data()[0].clone()
    inputs[0, 0] = math.inf
    before = flat_weights(model)
    calls: list[Tensor] = []

    optimizer.step(closure_for(fabric, model, optimizer, inputs, calls))

    assert len(calls) == 1
    assert torch.equal(flat_weights(model), before)
    assert fabric.strategy.precision.scaler.get_scale() == INIT_SCALE / 2


def test_lbfgs_is_refused_in_16_mixed_before_its_closure_runs_as_lightnings_type_error() -> None:
    fabric, model, optimizer = set_up(torch.optim.LBFGS)
    before = flat_weights(model)
    calls: list[Tensor] = []

    # Lightning's Fabric raises TypeError for LBFGS with a GradScaler: code written to catch it catches mixprec's.
    with pytest.raises(TypeError, match="LBFGS evaluates its closure several times") as raised:
        optimizer.step(closure_for(fabric, model, optimizer, regression_data()[0], calls))

    assert isinstance(raised.value, mixprec.ClosureError)
    assert "get_precision('bf16-mixed', device)" in str(raised.value)
    assert calls == []
    assert torch.equal(flat_weights(model), before)


def test_optimizer_step_with_closure_none_steps_as_without_a_closure_in_16_mixed() -> None:
    # torch's GradScaler.step refuses the keyword closure whatever its value.
    stepped = []
    for kwargs in ({"closure": None}, {}):
        precision = mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE)
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        inputs, targets = regression_data()
        with precision.forward_context():
            outputs = model(inputs)
        precision.backward(nn.functional.mse_loss(outputs, targets), model)
        precision.optimizer_step(optimizer, **kwargs)
        stepped.append(flat_weights(model))

    assert torch.equal(stepped[0], stepped[1])
    assert not torch.equal(stepped[0], flat_weights(make_model()))
