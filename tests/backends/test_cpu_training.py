"""Real training on this CPU through ``get_precision`` and Fabric, with mixprec-cpu's objects.

Nothing is faked: the precisions come from ``get_precision`` with the installed backend, Fabric sets
up a small model, and the steps run on this CPU. The tests do not assume what this CPU computes
natively; an emulated dtype is only slower.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import Precision

import mixprec
from mixprec import PrecisionWarning

pytestmark = pytest.mark.slow

SGD = partial(torch.optim.SGD, lr=0.05)
ADAM = partial(torch.optim.Adam, lr=0.05)
FUSED_ADAM = partial(torch.optim.Adam, lr=0.05, fused=True)
#: Clipping before the step of an optimizer that unscales inside step() is refused with one of these.


def get(precision: str, **options: Any) -> Precision:
    """``get_precision`` on the CPU, without the warning a dtype emulated here brings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        return mixprec.get_precision(precision, "cpu", **options)


class Run:
    """A tiny regression model and its optimizer, set up by Fabric with a precision from mixprec."""

    def __init__(self, precision: Precision, optimizer: Callable[..., torch.optim.Optimizer] = SGD) -> None:
        torch.manual_seed(0)
        self.fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision])
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.model, self.optimizer = self.fabric.setup(model, optimizer(model.parameters()))
        self.x = torch.randn(64, 8)
        self.y = self.x.sum(dim=1, keepdim=True) / 4

    def backward(self, scale_input: float = 1.0) -> torch.Tensor:
        with self.fabric.autocast():
            out = self.model(self.x * scale_input)
        loss = torch.nn.functional.mse_loss(out.float(), self.y)
        self.fabric.backward(loss)
        return loss.detach()

    def step(self, scale_input: float = 1.0) -> torch.Tensor:
        loss = self.backward(scale_input)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss

    def weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


@pytest.fixture
def sixteen() -> Precision:
    return get("16-mixed", init_scale=2.0**10, growth_interval=2, backoff_factor=0.25)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_training_steps_through_get_precision_reduce_the_loss(precision: str) -> None:
    run = Run(get(precision))
    losses = [run.step() for _ in range(30)]
    assert losses[-1] < losses[0] / 4


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)])
def test_the_forward_pass_runs_in_the_low_dtype(precision: str, dtype: torch.dtype) -> None:
    run = Run(get(precision))
    with run.fabric.autocast():
        assert run.model.module(run.x).dtype == dtype
    assert run.model(run.x).dtype == torch.float32  # Fabric converts the output back


def test_bf16_mixed_has_no_scaler() -> None:
    assert get("bf16-mixed").scaler is None  # type: ignore[attr-defined]


def test_16_mixed_scales_with_a_cpu_grad_scaler_that_grows_after_the_given_interval(sixteen: Precision) -> None:
    scaler = sixteen.scaler  # type: ignore[attr-defined]
    assert scaler._device == "cpu"
    run = Run(sixteen)
    run.step()
    assert scaler.get_scale() == 2.0**10
    run.step()
    assert scaler.get_scale() == 2.0**11


def test_16_mixed_skips_a_step_with_inf_gradients_and_backs_off_by_the_given_factor(sixteen: Precision) -> None:
    run = Run(sixteen)
    before = run.weights()
    run.step(scale_input=float("inf"))
    assert all(torch.equal(a, b) for a, b in zip(before, run.weights(), strict=True))
    assert sixteen.scaler.get_scale() == 2.0**10 * 0.25  # type: ignore[attr-defined]


def test_a_fused_optimizer_steps_through_the_scaler(sixteen: Precision) -> None:
    run = Run(sixteen, FUSED_ADAM)
    before = run.weights()
    run.step()
    assert not any(torch.equal(a, b) for a, b in zip(before, run.weights(), strict=True))


def test_a_fused_optimizer_skips_a_step_with_inf_gradients(sixteen: Precision) -> None:
    run = Run(sixteen, FUSED_ADAM)
    before = run.weights()
    run.step(scale_input=float("inf"))
    assert all(torch.equal(a, b) for a, b in zip(before, run.weights(), strict=True))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_clipping_before_a_step_unscales_to_the_true_norm(sixteen: Precision, fused: bool) -> None:
    run = Run(sixteen, FUSED_ADAM if fused else ADAM)
    run.backward()
    norm = run.fabric.clip_gradients(run.model, run.optimizer, max_norm=1e9)
    reference = Run(get("32-true"), ADAM)
    reference.backward()
    true_norm = torch.cat([p.grad.flatten() for p in reference.model.parameters() if p.grad is not None]).norm()
    assert norm is not None
    assert torch.allclose(norm, true_norm, rtol=1e-2)
