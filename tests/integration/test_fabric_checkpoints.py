"""The precision's state in Fabric checkpoints: ``fabric.save`` and ``fabric.load`` with the plugin in the state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import Precision
from torch import nn

import mixprec
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]


def fabric_run(
    precision: str, seed: int = 0, **options: Any
) -> tuple[Fabric, nn.Module, torch.optim.Optimizer, Precision]:
    """A CPU Fabric with mixprec's plugin for ``precision``, and the shared model (from ``seed``) and an
    optimizer set up by it."""
    plugin = mixprec.get_precision(precision, "cpu", **options)
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[plugin])
    model = make_model(seed)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.05))
    return fabric, model, optimizer, plugin


def step(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, *, overflow: bool = False) -> None:
    inputs, targets = regression_data()
    if overflow:
        inputs = inputs.clone()
        inputs[0, 0] = float("inf")
    optimizer.zero_grad()
    fabric.backward(nn.functional.mse_loss(model(inputs), targets))
    optimizer.step()


def test_fabric_save_and_load_restore_the_scaler_state_exactly(tmp_path: Path) -> None:
    fabric, model, optimizer, plugin = fabric_run("16-mixed", init_scale=256.0, growth_interval=3)
    step(fabric, model, optimizer, overflow=True)  # skipped: the scale halves
    step(fabric, model, optimizer)  # taken: the growth tracker counts it
    saved = {"scale": 128.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3, "_growth_tracker": 1}
    assert {key: value for key, value in plugin.state_dict().items() if key != "mixprec"} == saved
    fabric.save(tmp_path / "run.ckpt", {"model": model, "optimizer": optimizer, "precision": plugin})

    fabric2, model2, optimizer2, plugin2 = fabric_run("16-mixed")
    remainder = fabric2.load(tmp_path / "run.ckpt", {"model": model2, "optimizer": optimizer2, "precision": plugin2})

    assert remainder == {}
    assert plugin2.state_dict() == plugin.state_dict()
    assert torch.equal(flat_weights(model2), flat_weights(model))


@pytest.mark.parametrize(("saved", "loaded"), [("16-mixed", "bf16-mixed"), ("bf16-mixed", "16-mixed")])
def test_fabric_load_into_a_precision_of_another_kind_is_a_state_dict_error(
    tmp_path: Path, saved: str, loaded: str
) -> None:
    fabric, model, _, plugin = fabric_run(saved)
    fabric.save(tmp_path / "run.ckpt", {"model": model, "precision": plugin})
    fabric2, model2, _, plugin2 = fabric_run(loaded)

    with pytest.raises(mixprec.StateDictError, match="GradScaler"):
        fabric2.load(tmp_path / "run.ckpt", {"model": model2, "precision": plugin2})


def test_fabric_load_with_the_precision_first_refuses_a_mismatch_before_touching_the_model(tmp_path: Path) -> None:
    fabric, model, optimizer, plugin = fabric_run("16-mixed", init_scale=256.0)
    step(fabric, model, optimizer)
    fabric.save(tmp_path / "run.ckpt", {"model": model, "optimizer": optimizer, "precision": plugin})
    fabric2, model2, optimizer2, plugin2 = fabric_run("bf16-mixed", seed=1)
    weights = flat_weights(model2)

    with pytest.raises(mixprec.StateDictError, match="GradScaler"):
        fabric2.load(tmp_path / "run.ckpt", {"precision": plugin2, "model": model2, "optimizer": optimizer2})

    assert torch.equal(flat_weights(model2), weights)
    assert not torch.equal(weights, flat_weights(model))


def test_fabric_load_restores_the_entries_in_the_order_of_the_state_dict(tmp_path: Path) -> None:
    # Why the precision goes first: placed after the model, the mismatch is found once the model is overwritten.
    fabric, model, _, plugin = fabric_run("16-mixed")
    fabric.save(tmp_path / "run.ckpt", {"model": model, "precision": plugin})
    fabric2, model2, _, plugin2 = fabric_run("bf16-mixed", seed=1)

    with pytest.raises(mixprec.StateDictError):
        fabric2.load(tmp_path / "run.ckpt", {"model": model2, "precision": plugin2})

    assert torch.equal(flat_weights(model2), flat_weights(model))
