"""mixprec's ``target="trainer"`` objects in real ``lightning.pytorch.Trainer`` runs on the CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins import precision as lightning_precision
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import mixprec
from tests.integration.models import flat_weights, make_model, regression_data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning"),
    pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
DEFAULT_SCALER_STATE = torch.amp.GradScaler("cpu").state_dict()


class Regression(LightningModule):
    """The shared regression network; the batch at ``overflow_batch`` gets an inf input, to overflow fp16."""

    def __init__(self, lr: float = 0.05, overflow_batch: int | None = None, fused: bool = False) -> None:
        super().__init__()
        self.net = make_model()
        self.lr = lr
        self.fused = fused
        self.overflow_batch = overflow_batch
        self.output_dtypes: list[torch.dtype] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        if batch_idx == self.overflow_batch:
            inputs = inputs.clone()
            inputs[0, 0] = float("inf")
        outputs = self.net(inputs)
        self.output_dtypes.append(outputs.dtype)
        return nn.functional.mse_loss(outputs.float(), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, fused=self.fused)

    def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        return DataLoader(TensorDataset(*regression_data()), batch_size=8)


class Recorder(Callback):
    """Records the precision's state when training starts and the unscaled gradient norm before each step."""

    def __init__(self) -> None:
        self.start_state: dict[str, Any] = {}
        self.start_step = -1
        self.start_weights = torch.empty(0)
        self.gradient_norms: list[float] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_state = trainer.precision_plugin.state_dict()
        self.start_step = trainer.global_step
        self.start_weights = flat_weights(pl_module)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.gradient_norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))


def cpu_trainer(plugin: Any, max_steps: int, **kwargs: Any) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        plugins=[plugin],
        max_steps=max_steps,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_target_trainer_returns_a_plugin_the_trainer_takes_as_it_is() -> None:
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer")

    assert isinstance(plugin, lightning_precision.MixedPrecision)
    assert cpu_trainer(plugin, max_steps=1).precision_plugin is plugin


def test_the_trainer_rejects_the_fabric_plugin_that_target_trainer_replaces() -> None:
    with pytest.raises(MisconfigurationException, match="Found invalid type for plugin"):
        cpu_trainer(mixprec.get_precision("bf16-mixed", "cpu"), max_steps=1)


@pytest.mark.parametrize("precision", list(AUTOCAST_DTYPES))
def test_a_lightning_module_trains_in_mixed_precision_on_cpu(precision: str) -> None:
    # A small initial scale for fp16, so that the first step does not overflow and get skipped.
    scaler_options: dict[str, Any] = {"init_scale": 256.0} if precision == "16-mixed" else {}
    plugin = mixprec.get_precision(precision, "cpu", target="trainer", **scaler_options)
    model = Regression()
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=4, callbacks=[recorder]).fit(model)

    assert set(model.output_dtypes) == {AUTOCAST_DTYPES[precision]}
    assert len(model.output_dtypes) == 4
    assert not torch.equal(flat_weights(model), recorder.start_weights)


def test_trainer_clips_and_steps_in_bf16_mixed_with_a_fused_optimizer() -> None:
    # Without a scaler there is nothing to unscale: Lightning 2.6.6 refuses anyway (Lightning #21435).
    clip = 1e-3
    plugin = mixprec.get_precision("bf16-mixed", "cpu", target="trainer")
    model = Regression(lr=1.0, fused=True)
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=1, gradient_clip_val=clip, callbacks=[recorder]).fit(model)

    # With lr=1 the update is the clipped gradient: its norm is the clip value.
    update = flat_weights(model) - recorder.start_weights
    assert float(torch.linalg.vector_norm(update)) == pytest.approx(clip, rel=1e-3)


def test_trainer_clips_the_unscaled_gradients_in_16_mixed() -> None:
    clip = 1e-3
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    model = Regression(lr=1.0)
    recorder = Recorder()
    inputs, targets = next(iter(model.train_dataloader()))
    reference = make_model()
    grads = torch.autograd.grad(nn.functional.mse_loss(reference(inputs), targets), list(reference.parameters()))
    reference_norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))

    cpu_trainer(plugin, max_steps=1, gradient_clip_val=clip, callbacks=[recorder]).fit(model)

    # The hook sees the gradients after unscaling, before clipping: their norm is that of fp32 training.
    assert recorder.gradient_norms == [pytest.approx(reference_norm, rel=2e-2)]
    # With lr=1 the update is the clipped gradient: its norm is the clip value only if clipping saw unscaled gradients.
    update = flat_weights(model) - recorder.start_weights
    assert float(torch.linalg.vector_norm(update)) == pytest.approx(clip, rel=1e-3)


class ManualClipping(Regression):
    """Manual optimization as Lightning's recipe writes it: manual_backward, self.clip_gradients, opt.step()."""

    def __init__(self, clip: float, fused: bool = False) -> None:
        super().__init__(lr=1.0, fused=fused)
        self.automatic_optimization = False
        self.clip = clip

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        optimizer: Any = self.optimizers()
        optimizer.zero_grad()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        self.clip_gradients(optimizer, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return loss


@pytest.mark.parametrize("fused", [False, True], ids=["sgd", "fused-sgd"])
def test_manual_optimization_clips_the_unscaled_gradients_in_16_mixed(fused: bool) -> None:
    clip = 1e-3
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    model = ManualClipping(clip, fused=fused)
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=1, callbacks=[recorder]).fit(model)

    # With lr=1 the update is the clipped gradient: its norm is the clip value only if clipping saw unscaled
    # gradients and the step did not unscale them a second time.
    update = flat_weights(model) - recorder.start_weights
    assert float(torch.linalg.vector_norm(update)) == pytest.approx(clip, rel=1e-3)
    assert recorder.gradient_norms == [pytest.approx(clip, rel=1e-3)]


def test_manual_optimization_skips_an_overflowing_step_after_clipping_in_16_mixed() -> None:
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    model = ManualClipping(clip=1e-3)
    model.overflow_batch = 0
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=2, callbacks=[recorder]).fit(model)

    assert plugin.scaler.get_scale() == 128.0  # backed off once, for the overflowing first step
    assert torch.isfinite(flat_weights(model)).all()


class SkipsSecondBatch(Regression):
    """Returns None for the second batch, as a training_step that skips a batch does: with accumulate_grad_batches=2
    the first window ends on it, with the first batch's gradients accumulated and clipped, and no step."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:  # type: ignore[override]
        return None if batch_idx == 1 else super().training_step(batch, batch_idx)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_skipped_batch_with_clipping_in_16_mixed_trains_on(algorithm: str, accumulate: int) -> None:
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    model = SkipsSecondBatch()
    before = flat_weights(model)

    trainer = cpu_trainer(
        plugin,
        max_steps=2,
        gradient_clip_val=0.5,
        gradient_clip_algorithm=algorithm,
        accumulate_grad_batches=accumulate,
    )
    trainer.fit(model)

    assert trainer.global_step == 2  # the steps after the skipped batch unscaled, clipped and stepped
    assert torch.isfinite(flat_weights(model)).all()
    assert not torch.equal(flat_weights(model), before)


def checkpoint_of(precision: str, path: Path, **options: Any) -> None:
    """Train two steps in ``precision`` and save a checkpoint at ``path``."""
    trainer = cpu_trainer(mixprec.get_precision(precision, "cpu", target="trainer", **options), max_steps=2)
    trainer.fit(Regression())
    trainer.save_checkpoint(path)


def trained_checkpoint(path: Path) -> dict[str, Any]:
    """Train two 16-mixed steps (one skipped for overflow), save a checkpoint at ``path``, return the scaler state."""
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0, growth_interval=3)
    trainer = cpu_trainer(plugin, max_steps=2)
    trainer.fit(Regression(overflow_batch=0))
    trainer.save_checkpoint(path)
    state = plugin.state_dict()
    assert scaler_state(state) == {
        "scale": 128.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 3,
        "_growth_tracker": 1,
    }
    return state


def scaler_state(state: dict[str, Any]) -> dict[str, Any]:
    """The GradScaler's part of a precision object's state: every key but the "mixprec" entry."""
    return {key: value for key, value in state.items() if key != "mixprec"}


def test_the_trainer_checkpoint_holds_the_scaler_state_under_lightnings_key(tmp_path: Path) -> None:
    state = trained_checkpoint(tmp_path / "run.ckpt")

    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=False)

    # The Trainer files a precision plugin's state under its class's __qualname__: Lightning's own key.
    assert checkpoint[lightning_precision.MixedPrecision.__qualname__] == state


def test_a_resumed_trainer_run_continues_with_the_saved_scale(tmp_path: Path) -> None:
    state = trained_checkpoint(tmp_path / "run.ckpt")
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer")
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=3, callbacks=[recorder]).fit(Regression(), ckpt_path=tmp_path / "run.ckpt")

    assert recorder.start_step == 2
    assert scaler_state(recorder.start_state) == scaler_state(state)
    assert scaler_state(plugin.state_dict()) == {**scaler_state(state), "_growth_tracker": 2}


def test_a_checkpoint_of_lightnings_own_mixed_precision_restores_the_scale(tmp_path: Path) -> None:
    lightning_plugin = lightning_precision.MixedPrecision(
        "16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=64.0)
    )
    trainer = cpu_trainer(lightning_plugin, max_steps=1)
    trainer.fit(Regression())
    trainer.save_checkpoint(tmp_path / "lightning.ckpt")
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer")
    recorder = Recorder()

    cpu_trainer(plugin, max_steps=2, callbacks=[recorder]).fit(Regression(), ckpt_path=tmp_path / "lightning.ckpt")

    assert scaler_state(recorder.start_state) == lightning_plugin.state_dict()


@pytest.mark.parametrize("resumed", ["32-true", "bf16-true", "bf16-mixed"])
def test_resuming_a_16_mixed_checkpoint_without_a_scaler_is_a_state_dict_error_saying_how_to_resume(
    tmp_path: Path, resumed: str
) -> None:
    trained_checkpoint(tmp_path / "run.ckpt")
    # The Trainer skips state filed under another plugin class's name; mixprec's object sees it first.
    plugin = mixprec.get_precision(resumed, "cpu", target="trainer", backend="core" if "true" in resumed else None)

    with pytest.raises(mixprec.StateDictError, match=r"saved by a '16-mixed' run.*resume it in '16-mixed'"):
        cpu_trainer(plugin, max_steps=3).fit(Regression(), ckpt_path=tmp_path / "run.ckpt")


def test_resuming_a_checkpoint_without_scaler_state_into_16_mixed_warns_that_the_scale_starts_fresh_and_trains(
    tmp_path: Path,
) -> None:
    checkpoint_of("bf16-mixed", tmp_path / "run.ckpt")
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    recorder = Recorder()
    trainer = cpu_trainer(plugin, max_steps=3, callbacks=[recorder])

    with pytest.warns(mixprec.PrecisionWarning, match="starts with a fresh scale of 256.0"):
        trainer.fit(Regression(), ckpt_path=tmp_path / "run.ckpt")

    assert recorder.start_step == 2
    assert trainer.global_step == 3


class Validated(Regression):
    """The regression module with a validation step."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.net(inputs).float(), targets)
        self.log("val_loss", loss)
        return loss


def test_validating_a_16_mixed_checkpoint_in_32_true_needs_no_scaler(tmp_path: Path) -> None:
    trained_checkpoint(tmp_path / "run.ckpt")
    plugin = mixprec.get_precision("32-true", "cpu", target="trainer")
    model = Validated()

    results = cpu_trainer(plugin, max_steps=1).validate(
        model, dataloaders=model.train_dataloader(), ckpt_path=tmp_path / "run.ckpt", verbose=False
    )

    assert math.isfinite(results[0]["val_loss"])


def test_a_16_mixed_checkpoint_resumed_under_fsdp_gets_its_scaler_state_under_the_key_the_trainer_loads() -> None:
    # FSDP runs only on GPUs: the object is given the checkpoint as the Trainer gives it, before restoring.
    state = {**DEFAULT_SCALER_STATE, "scale": 128.0, "_growth_tracker": 1}
    checkpoint: dict[str, Any] = {lightning_precision.MixedPrecision.__qualname__: state}
    plugin = mixprec.get_precision("16-mixed", "cpu", target="trainer", strategy="fsdp")

    plugin.on_load_checkpoint(checkpoint)
    plugin.load_state_dict(checkpoint[type(plugin).__qualname__])

    assert type(plugin).__qualname__ == lightning_precision.FSDPPrecision.__qualname__
    assert scaler_state(plugin.state_dict()) == state
