"""mixprec's objects in real Lightning Fabric runs on the CPU."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.accelerators.cpu import CPUAccelerator as FabricCPUAccelerator
from lightning.fabric.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.accelerators.cpu import CPUAccelerator as TrainerCPUAccelerator
from torch import Tensor, nn

import mixprec
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")]

#: Every precision the CPU backend and the core offer, with the dtype of the parameters after
#: ``fabric.setup`` and the dtype a linear layer computes in.
CPU_PRECISIONS = {
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "16-mixed": (torch.float32, torch.float16),
    "32-true": (torch.float32, torch.float32),
    "64-true": (torch.float64, torch.float64),
    "bf16-true": (torch.bfloat16, torch.bfloat16),
    "16-true": (torch.float16, torch.float16),
}


def cpu_fabric(precision: Precision) -> Fabric:
    return Fabric(accelerator="cpu", devices=1, plugins=[precision])


def setup(fabric: Fabric, lr: float, model: nn.Module | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``model`` (by default the shared model) and an SGD optimizer, set up by ``fabric``."""
    model = model or make_model()
    return fabric.setup(model, torch.optim.SGD(model.parameters(), lr=lr))  # type: ignore[no-any-return]


def training_step(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor) -> Tensor:
    """One step of mean-squared regression on ``inputs``; returns the loss."""
    targets = regression_data()[1][: len(inputs)]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(inputs), targets)
    fabric.backward(loss)
    optimizer.step()
    return loss.detach()


def test_the_tested_precisions_are_all_that_the_cpu_backend_and_the_core_offer() -> None:
    records = mixprec.available("cpu")
    offered = {r.precision for r in records if r.backend in ("cpu", "core") and r.status in ("available", "slow")}
    assert offered == set(CPU_PRECISIONS)


@pytest.mark.parametrize("precision", list(CPU_PRECISIONS))
def test_fabric_trains_in_each_cpu_precision(precision: str) -> None:
    param_dtype, compute_dtype = CPU_PRECISIONS[precision]
    plugin = mixprec.get_precision(precision, "cpu")
    fabric = cpu_fabric(plugin)
    network = make_model()
    computed: list[torch.dtype] = []
    network[0].register_forward_hook(lambda _m, _i, out: computed.append(out.dtype))
    model, optimizer = setup(fabric, lr=0.05, model=network)
    inputs = regression_data()[0]

    losses = [training_step(fabric, model, optimizer, inputs) for _ in range(4)]

    assert fabric.strategy.precision is plugin
    assert {p.dtype for p in model.parameters()} == {param_dtype}
    assert set(computed) == {compute_dtype}
    assert all(torch.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]


def test_fabric_keeps_fp16_mixed_on_cpu_with_a_cpu_grad_scaler() -> None:
    # Fabric(precision="16-mixed") on a CPU silently trains in bf16; the plugin object must not be converted.
    plugin = mixprec.get_precision("16-mixed", "cpu")
    fabric = cpu_fabric(plugin)

    with fabric.autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)

    assert fabric.strategy.precision is plugin
    assert product.dtype == torch.float16
    assert isinstance(plugin, MixedPrecision)
    assert type(plugin.scaler) is torch.amp.GradScaler
    assert plugin.scaler._device == "cpu"


@pytest.mark.parametrize("accelerator", [FabricCPUAccelerator, TrainerCPUAccelerator])
@pytest.mark.parametrize("target", ["fabric", "trainer"])
def test_a_lightning_accelerator_object_resolves_to_its_device(accelerator: type, target: str) -> None:
    plugin = mixprec.get_precision("bf16-mixed", device=accelerator(), target=target)

    assert getattr(plugin, "device", None) == "cpu"
    with plugin.forward_context():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_fabric_clips_the_unscaled_gradients_in_16_mixed() -> None:
    max_norm = 1e-3
    # A small initial scale, so that the first step does not overflow fp16 and get skipped.
    fabric = cpu_fabric(mixprec.get_precision("16-mixed", "cpu", init_scale=256.0))
    model, optimizer = setup(fabric, lr=1.0)
    inputs, targets = regression_data()
    before = flat_weights(model)

    fabric.backward(nn.functional.mse_loss(model(inputs), targets))
    norm = fabric.clip_gradients(model, optimizer, max_norm=max_norm)
    optimizer.step()

    # With lr=1 the update is the clipped gradient: its norm is max_norm only if clipping saw unscaled gradients.
    assert norm is not None
    assert float(norm) > 100 * max_norm
    assert float(torch.linalg.vector_norm(flat_weights(model) - before)) == pytest.approx(max_norm, rel=1e-3)


def test_fabric_clips_and_steps_in_bf16_mixed_with_a_fused_optimizer() -> None:
    max_norm = 1e-3
    fabric = cpu_fabric(mixprec.get_precision("bf16-mixed", "cpu"))
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1.0, fused=True))
    inputs, targets = regression_data()
    before = flat_weights(model)

    fabric.backward(nn.functional.mse_loss(model(inputs), targets))
    fabric.clip_gradients(model, optimizer, max_norm=max_norm)
    optimizer.step()

    # With lr=1 the update is the clipped gradient: its norm is max_norm.
    assert float(torch.linalg.vector_norm(flat_weights(model) - before)) == pytest.approx(max_norm, rel=1e-3)
