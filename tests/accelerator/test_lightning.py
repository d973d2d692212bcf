"""Real Fabric and Trainer runs on the fake device, and the stale optimizer caught at its first step."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from lightning.fabric import Fabric
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import mixprec
from mixprec_accelerator.lightning import strategy
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]

MIXED = ("bf16-mixed", "16-mixed")


def fabric_for(precision: str, device: str) -> Fabric:
    return Fabric(strategy=strategy(device), plugins=[mixprec.get_precision(precision, device)])


def train_fabric(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> list[float]:
    inputs, targets = (t.to(fabric.device) for t in regression_data())
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs).float(), targets)
        fabric.backward(loss)
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("precision", MIXED)
def test_fabric_trains_on_the_fake_device(fake_device: ModuleType, precision: str) -> None:
    fabric = fabric_for(precision, fake_device.NAME)
    model = fabric.setup_module(make_model())
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.05))
    before = flat_weights(model).cpu()

    losses = train_fabric(fabric, model, optimizer)

    assert fabric.device == torch.device(fake_device.NAME, 0)
    assert {p.device.type for p in model.parameters()} == {fake_device.NAME}
    assert not torch.equal(flat_weights(model).cpu(), before)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("precision", MIXED)
def test_fabric_stale_optimizer_fails_its_first_step(fake_device: ModuleType, precision: str) -> None:
    fabric = fabric_for(precision, fake_device.NAME)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # built before the model is moved
    model, optimizer = fabric.setup(model, optimizer)

    with pytest.raises(mixprec.OptimizerDeviceError, match=r"on cpu, not on 'fakedev'.*setup_module"):
        train_fabric(fabric, model, optimizer, steps=1)


class Regression(LightningModule):
    """The shared regression model; ``early_optimizer`` builds its optimizer in __init__, before the model moves."""

    def __init__(self, early_optimizer: bool = False) -> None:
        super().__init__()
        self.net = make_model()
        self.early = torch.optim.SGD(self.net.parameters(), lr=0.05) if early_optimizer else None
        self.losses: list[float] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.net(inputs).float(), targets)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.early or torch.optim.SGD(self.net.parameters(), lr=0.05)


def trainer_for(precision: str, device: str) -> Trainer:
    return Trainer(
        strategy=strategy(device, target="trainer"),
        plugins=[mixprec.get_precision(precision, device, target="trainer")],
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def loader() -> DataLoader[tuple[Tensor, ...]]:
    return DataLoader(TensorDataset(*regression_data()), batch_size=32)


@pytest.mark.parametrize("precision", MIXED)
def test_trainer_trains_on_the_fake_device(fake_device: ModuleType, precision: str) -> None:
    model = Regression()
    before = flat_weights(model)
    trainer = trainer_for(precision, fake_device.NAME)

    trainer.fit(model, loader())

    assert trainer.strategy.root_device == torch.device(fake_device.NAME, 0)
    assert trainer.global_step == 5
    assert not torch.equal(flat_weights(model).cpu(), before)
    assert model.losses[-1] < model.losses[0]


@pytest.mark.parametrize("precision", MIXED)
def test_trainer_stale_optimizer_fails_its_first_step(fake_device: ModuleType, precision: str) -> None:
    trainer = trainer_for(precision, fake_device.NAME)

    with pytest.raises(mixprec.OptimizerDeviceError, match=r"configure_optimizers"):
        trainer.fit(Regression(early_optimizer=True), loader())


def test_fabric_and_the_trainer_find_the_accelerator_under_the_device_name(fake_device: ModuleType) -> None:
    from lightning.fabric.accelerators import ACCELERATOR_REGISTRY
    from lightning.pytorch.accelerators import AcceleratorRegistry

    for registry in (ACCELERATOR_REGISTRY, AcceleratorRegistry):
        accelerator = registry.get(fake_device.NAME)
        assert type(accelerator).name() == fake_device.NAME
        assert type(accelerator).auto_device_count() == fake_device.COUNT
