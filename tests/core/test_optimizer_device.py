"""The stale optimizer (its parameters off the precision's device, without gradients) fails its first step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mixprec
from mixprec._optimizer_device import stale_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")


def optimizer_on(device: str, with_grad: bool = False) -> torch.optim.SGD:
    weight = nn.Parameter(torch.ones(3, device=device))
    if with_grad:
        weight.grad = torch.ones_like(weight)
    return torch.optim.SGD([weight], lr=0.1)


def test_parameters_off_the_device_without_gradients_are_stale() -> None:
    error = stale_optimizer(optimizer_on("meta"), "cpu")
    assert isinstance(error, mixprec.OptimizerDeviceError)
    assert "on meta, not on 'cpu'" in str(error)
    assert "after moving the model" in str(error)


def test_parameters_off_the_device_with_gradients_are_kept_there_on_purpose() -> None:
    assert stale_optimizer(optimizer_on("meta", with_grad=True), "cpu") is None


def test_parameters_on_the_device_are_never_stale() -> None:
    assert stale_optimizer(optimizer_on("cpu"), "cpu") is None


@pytest.mark.parametrize(
    ("precision", "backend"),
    [("bf16-mixed", "cpu"), ("16-mixed", "cpu"), ("32-true", "core"), ("64-true", "core"), ("bf16-true", "core")],
)
def test_fabric_objects_refuse_a_stale_optimizer_at_its_first_step(precision: str, backend: str) -> None:
    p = mixprec.get_precision(precision, "cpu", backend=backend)
    with pytest.raises(mixprec.OptimizerDeviceError):
        p.optimizer_step(optimizer_on("meta"))


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_trainer_objects_refuse_a_stale_optimizer_once_the_closure_ran(precision: str) -> None:
    p = mixprec.get_precision(precision, "cpu", target="trainer")
    ran = []
    with pytest.raises(mixprec.OptimizerDeviceError):
        p.optimizer_step(optimizer_on("meta"), model=nn.Linear(1, 1), closure=lambda: ran.append(1))
    assert ran == [1]


def test_an_optimizer_is_checked_at_its_first_step_only() -> None:
    p = mixprec.get_precision("32-true", "cpu")
    optimizer = optimizer_on("cpu", with_grad=True)
    p.optimizer_step(optimizer)
    # Its parameters moved away after the first step: not looked at again.
    optimizer.param_groups[0]["params"] = [nn.Parameter(torch.ones(3, device="meta"))]
    p.optimizer_step(optimizer)


def test_the_precision_object_pickles_after_an_optimizer_step() -> None:
    import pickle

    p = mixprec.get_precision("32-true", "cpu", backend="core")
    p.optimizer_step(optimizer_on("cpu", with_grad=True))
    assert type(pickle.loads(pickle.dumps(p))) is type(p)
