"""Gradient clipping with a fused optimizer in "16-mixed", in real Fabric and Trainer runs on the CPU.

torch's ``GradScaler.step`` knows when an optimizer's gradients were unscaled already (for clipping)
and then steps a fused optimizer with them as they are, skipping the step if they overflowed. So
clipping with ``fused=True`` under a scaler is torch's own recipe (``scaler.unscale_``, clip,
``scaler.step``), which each run here must match bit for bit. torch 2.13's fused and unfused CPU
kernels of SGD compute the same bits, so there the fused run must also match the unfused one
exactly; those of AdamW differ in the last bit even without mixprec, so there it matches within
float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import mixprec
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning"),
    pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

#: A small initial scale, so that no step overflows float16 and gets skipped unless a test makes it.
INIT_SCALE = 256.0
MAX_NORM = 0.1
STEPS = 3
BATCH = 8
OPTIMIZERS = {"AdamW": 1e-2, "SGD": 0.1}


def optimizer_for(model: nn.Module, name: str, fused: bool) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, name)
    extra = {"momentum": 0.9} if name == "SGD" else {}
    return cls(model.parameters(), lr=OPTIMIZERS[name], fused=fused, **extra)  # type: ignore[no-any-return]


def batches() -> list[tuple[Tensor, Tensor]]:
    inputs, targets = regression_data()
    return [(inputs[i : i + BATCH], targets[i : i + BATCH]) for i in range(0, BATCH * STEPS, BATCH)]


def by_hand(name: str, fused: bool, *, loss_in_autocast: bool = False) -> tuple[Tensor, list[float]]:
    """torch's recipe for clipping under a GradScaler: the weights after the steps, and the norms clipping saw."""
    model = make_model()
    optimizer = optimizer_for(model, name, fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    norms = []
    for inputs, targets in batches():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            outputs = model(inputs)
            if loss_in_autocast:
                loss = nn.functional.mse_loss(outputs.float(), targets)
        if not loss_in_autocast:
            loss = nn.functional.mse_loss(outputs, targets)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        scaler.step(optimizer)
        scaler.update()
    return flat_weights(model), norms


def steps_taken(optimizer: torch.optim.Optimizer) -> set[int]:
    """The step counts in an AdamW's state: a fused step skipped for inf gradients creates the state, at step 0."""
    return {int(state["step"]) for state in optimizer.state_dict()["state"].values()}


# --- Fabric


def fabric_run(name: str, fused: bool) -> tuple[Tensor, list[float]]:
    """The same steps in a Fabric loop with mixprec's "16-mixed": the weights after them, and the clipped norms."""
    fabric = Fabric(
        accelerator="cpu", devices=1, plugins=[mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE)]
    )
    network = make_model()
    model, optimizer = fabric.setup(network, optimizer_for(network, name, fused))
    norms = []
    for inputs, targets in batches():
        optimizer.zero_grad()
        fabric.backward(nn.functional.mse_loss(model(inputs), targets))
        norms.append(float(fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM, error_if_nonfinite=False)))
        optimizer.step()
    return flat_weights(model), norms


@pytest.fixture(scope="module")
def fabric_runs() -> dict[tuple[str, bool], tuple[Tensor, list[float]]]:
    return {(name, fused): fabric_run(name, fused) for name in OPTIMIZERS for fused in (True, False)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fabric_clips_a_fused_optimizers_gradients_in_16_mixed_as_torchs_recipe_does(
    fabric_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]], name: str
) -> None:
    weights, norms = fabric_runs[name, True]
    expected_weights, expected_norms = by_hand(name, fused=True)

    assert norms == expected_norms
    assert torch.equal(weights, expected_weights)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fabric_clipping_sees_the_same_true_gradients_with_a_fused_optimizer_as_with_the_unfused(
    fabric_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]], name: str
) -> None:
    _, fused_norms = fabric_runs[name, True]
    _, unfused_norms = fabric_runs[name, False]

    # Above MAX_NORM: every step was clipped, so these are the norms of the unscaled gradients.
    assert all(norm > MAX_NORM for norm in fused_norms)
    assert fused_norms == pytest.approx(unfused_norms, rel=1e-6)


def test_fabric_trains_a_fused_sgd_with_clipping_in_16_mixed_bit_for_bit_like_the_unfused(
    fabric_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]],
) -> None:
    assert torch.equal(fabric_runs["SGD", True][0], fabric_runs["SGD", False][0])


def test_fabric_trains_a_fused_adamw_with_clipping_in_16_mixed_like_the_unfused_within_rounding(
    fabric_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]],
) -> None:
    fused, unfused = fabric_runs["AdamW", True][0], fabric_runs["AdamW", False][0]

    assert not torch.equal(fused, flat_weights(make_model()))
    torch.testing.assert_close(fused, unfused, rtol=1e-6, atol=1e-7)


def fabric_16_mixed_with(name: str) -> tuple[Fabric, Any, Any]:
    fabric = Fabric(
        accelerator="cpu", devices=1, plugins=[mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE)]
    )
    network = make_model()
    model, optimizer = fabric.setup(network, optimizer_for(network, name, fused=True))
    return fabric, model, optimizer


def test_fabric_skips_a_fused_step_whose_gradients_overflowed_after_clipping() -> None:
    fabric, model, optimizer = fabric_16_mixed_with("AdamW")
    inputs, targets = batches()[0]
    inputs = inputs.clone()
    inputs[0, 0] = math.inf
    before = flat_weights(model)

    fabric.backward(nn.functional.mse_loss(model(inputs), targets))
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM, error_if_nonfinite=False)
    optimizer.step()

    assert torch.equal(flat_weights(model), before)
    assert steps_taken(optimizer) == {0}
    assert fabric.strategy.precision.scaler.get_scale() == INIT_SCALE / 2


def test_fabric_refuses_to_unscale_twice_in_one_step_saying_how_to_clip_twice() -> None:
    fabric, model, optimizer = fabric_16_mixed_with("SGD")
    inputs, targets = batches()[0]
    fabric.backward(nn.functional.mse_loss(model(inputs), targets))
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    unscaled = [p.grad.clone() for p in model.parameters()]

    # torch's GradScaler raises RuntimeError here: code written to catch it catches mixprec's error too.
    with pytest.raises(RuntimeError, match="already unscaled since its last step") as raised:
        fabric.clip_gradients(model, optimizer, clip_val=MAX_NORM)

    assert isinstance(raised.value, mixprec.UnscalingError)
    assert "clip_grad_value_" in str(raised.value)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), unscaled, strict=True))


def test_unscaling_after_a_step_through_the_scaler_before_its_update_is_refused_saying_to_clip_first() -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", init_scale=INIT_SCALE)
    model = make_model()
    optimizer = optimizer_for(model, "AdamW", fused=True)
    inputs, targets = batches()[0]
    with precision.forward_context():
        outputs = model(inputs)
    precision.backward(nn.functional.mse_loss(outputs, targets), model)
    precision.scaler.step(optimizer)  # by hand, without the update that optimizer_step makes

    with pytest.raises(RuntimeError, match=r"Clip before optimizer\.step\(\)") as raised:
        precision.unscale_gradients(optimizer)

    assert isinstance(raised.value, mixprec.UnscalingError)


# --- the Trainer


class Regression(LightningModule):
    """The shared regression network with the optimizer named, fused or not; ``overflow`` makes the first batch inf."""

    def __init__(self, name: str, fused: bool, overflow: bool = False) -> None:
        super().__init__()
        self.net = make_model()
        self.optimizer_name = name
        self.fused = fused
        self.overflow = overflow

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        if self.overflow:
            inputs = inputs.clone()
            inputs[0, 0] = math.inf
        return nn.functional.mse_loss(self.net(inputs).float(), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return optimizer_for(self, self.optimizer_name, self.fused)

    def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        return DataLoader(TensorDataset(*regression_data()), batch_size=BATCH)


class GradientNorms(Callback):
    """The norm of the gradients ``on_before_optimizer_step`` sees, at each step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))


def fit(model: Regression, steps: int = STEPS) -> tuple[Trainer, GradientNorms]:
    norms = GradientNorms()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        plugins=[mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=INIT_SCALE)],
        max_steps=steps,
        gradient_clip_val=MAX_NORM,
        callbacks=[norms],
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model)
    return trainer, norms


@pytest.fixture(scope="module")
def trainer_runs() -> dict[tuple[str, bool], tuple[Tensor, list[float]]]:
    runs = {}
    for name in OPTIMIZERS:
        for fused in (True, False):
            model = Regression(name, fused)
            _, norms = fit(model)
            runs[name, fused] = (flat_weights(model), norms.norms)
    return runs


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_trainer_fits_a_fused_optimizer_with_gradient_clipping_in_16_mixed_as_torchs_recipe_does(
    trainer_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]], name: str
) -> None:
    weights, _ = trainer_runs[name, True]
    expected, _ = by_hand(name, fused=True, loss_in_autocast=True)

    assert torch.equal(weights, expected)


def test_trainer_fits_a_fused_sgd_with_gradient_clipping_in_16_mixed_bit_for_bit_like_the_unfused(
    trainer_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]],
) -> None:
    assert torch.equal(trainer_runs["SGD", True][0], trainer_runs["SGD", False][0])


def test_trainer_fits_a_fused_adamw_with_gradient_clipping_in_16_mixed_like_the_unfused_within_rounding(
    trainer_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]],
) -> None:
    torch.testing.assert_close(trainer_runs["AdamW", True][0], trainer_runs["AdamW", False][0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_on_before_optimizer_step_sees_a_fused_optimizers_gradients_unscaled_as_the_unfused_ones(
    trainer_runs: dict[tuple[str, bool], tuple[Tensor, list[float]]], name: str
) -> None:
    _, fused = trainer_runs[name, True]
    _, unfused = trainer_runs[name, False]
    _, true_norms = by_hand(name, fused=True, loss_in_autocast=True)

    assert fused == pytest.approx(true_norms, rel=1e-5)
    assert fused == pytest.approx(unfused, rel=1e-5)


def test_trainer_skips_a_fused_step_whose_gradients_overflowed_with_gradient_clipping() -> None:
    model = Regression("AdamW", fused=True, overflow=True)
    before = flat_weights(model)

    trainer, _ = fit(model, steps=1)

    assert torch.equal(flat_weights(model), before)
    assert steps_taken(trainer.optimizers[0]) == {0}
    assert trainer.precision_plugin.scaler.get_scale() == INIT_SCALE / 2
