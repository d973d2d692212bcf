"""Telemetry in real Fabric and Trainer runs on the CPU: fused optimizers, checkpoints, logging, location."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers import CSVLogger as FabricCSVLogger
from lightning.pytorch.loggers import CSVLogger
from torch import nn

import mixprec
from mixprec.lightning import PrecisionMonitor
from tests.integration.models import flat_weights, make_model, regression_data
from tests.integration.test_trainer import Regression
from tests.integration.test_trainer import cpu_trainer as quiet_trainer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*is slow here:mixprec.PrecisionWarning"),
    pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


def cpu_trainer(plugin: Any, max_steps: int, **kwargs: Any) -> Any:
    """The quiet CPU Trainer of the Trainer's tests; with ``logger=`` it logs there."""
    logger = kwargs.pop("logger", None)
    trainer = quiet_trainer(plugin, max_steps, **kwargs)
    if logger is not None:
        trainer.loggers = [logger]
    return trainer


def fabric_with(precision: Any, optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, **kwargs: Any) -> Any:
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision])
    model = make_model()
    model, opt = fabric.setup(model, optimizer(model.parameters(), lr=0.01, **kwargs))
    return fabric, model, opt


def fabric_step(fabric: Any, model: nn.Module, optimizer: Any, overflow: bool) -> None:
    inputs, targets = regression_data()
    if overflow:
        inputs = inputs.clone()
        inputs[0, 0] = math.inf
    optimizer.zero_grad()
    fabric.backward(nn.functional.mse_loss(model(inputs).float(), targets))
    optimizer.step()


def test_a_fused_adamw_run_counts_exactly_the_steps_whose_weights_did_not_change() -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", init_scale=1024.0)
    fabric, model, optimizer = fabric_with(precision, torch.optim.AdamW, fused=True)
    unchanged = []

    for overflow in (False, True, False, True, True, False):
        before = flat_weights(model)
        fabric_step(fabric, model, optimizer, overflow)
        unchanged.append(torch.equal(before, flat_weights(model)))

    assert unchanged == [False, True, False, True, True, False]  # the fused kernel skipped the overflowing steps
    telemetry = precision.telemetry
    assert (telemetry.steps, telemetry.skipped_steps, telemetry.last_overflow_step) == (6, 3, 4)
    assert (telemetry.consecutive_skips, telemetry.scale) == (0, 128.0)


def test_telemetry_survives_fabric_save_and_load(tmp_path: Path) -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", init_scale=1024.0)
    fabric, model, optimizer = fabric_with(precision)
    for overflow in (True, False, True):
        fabric_step(fabric, model, optimizer, overflow)
    fabric.save(tmp_path / "run.ckpt", {"precision": precision, "model": model, "optimizer": optimizer})
    resumed = mixprec.get_precision("16-mixed", "cpu")
    fabric2, model2, optimizer2 = fabric_with(resumed)

    fabric2.load(tmp_path / "run.ckpt", {"precision": resumed, "model": model2, "optimizer": optimizer2})
    fabric_step(fabric2, model2, optimizer2, False)

    assert resumed.telemetry == mixprec.Telemetry(
        steps=4, skipped_steps=2, consecutive_skips=0, last_overflow_step=2, scale=256.0
    )


def test_the_fabric_line_of_the_readme_logs_the_telemetry(tmp_path: Path) -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", init_scale=1024.0)
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision], loggers=[FabricCSVLogger(tmp_path)])
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))

    for step, overflow in enumerate((True, False)):
        fabric_step(fabric, model, optimizer, overflow)
        fabric.log_dict(precision.telemetry.metrics(), step=step)
    fabric.loggers[0].finalize("success")

    rows = read_metrics(next(tmp_path.rglob("metrics.csv")))
    assert [(row["precision/scale"], row["precision/skipped_steps"]) for row in rows] == [("512.0", "1.0")] * 2


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_telemetry_survives_a_trainer_resumed_from_ckpt_path(tmp_path: Path) -> None:
    first = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    trainer = cpu_trainer(first, max_steps=2)
    trainer.fit(Regression(overflow_batch=0))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = mixprec.get_precision("16-mixed", "cpu", target="trainer")

    cpu_trainer(resumed, max_steps=4).fit(Regression(), ckpt_path=tmp_path / "run.ckpt")

    assert first.telemetry.skipped_steps == 1
    assert resumed.telemetry == mixprec.Telemetry(
        steps=4, skipped_steps=1, consecutive_skips=0, last_overflow_step=0, scale=128.0
    )


def test_the_precision_monitor_logs_the_scale_and_skipped_steps_through_a_csv_logger(tmp_path: Path) -> None:
    precision = mixprec.get_precision("16-mixed", "cpu", target="trainer", init_scale=256.0)
    trainer = cpu_trainer(
        precision, max_steps=3, logger=CSVLogger(tmp_path), log_every_n_steps=1, callbacks=[PrecisionMonitor()]
    )

    trainer.fit(Regression(overflow_batch=1))

    rows = [row for row in read_metrics(Path(trainer.logger.log_dir) / "metrics.csv") if row["precision/scale"]]
    logged = [(row["step"], row["precision/scale"], row["precision/skipped_steps"]) for row in rows]
    assert logged == [("1", "256.0", "0.0"), ("2", "128.0", "1.0"), ("3", "128.0", "1.0")]


def test_the_precision_monitor_refuses_a_trainer_without_a_logger() -> None:
    precision = mixprec.get_precision("bf16-mixed", "cpu", target="trainer")
    trainer = cpu_trainer(precision, max_steps=1, callbacks=[PrecisionMonitor()])

    with pytest.raises(mixprec.PrecisionError, match="has none"):
        trainer.fit(Regression())


def test_the_precision_monitor_refuses_a_plugin_without_telemetry(tmp_path: Path) -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = MixedPrecision("bf16-mixed", "cpu")
    trainer = cpu_trainer(plugin, max_steps=1, logger=CSVLogger(tmp_path), callbacks=[PrecisionMonitor()])

    with pytest.raises(mixprec.PrecisionError, match="records no telemetry"):
        trainer.fit(Regression())


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_the_precision_monitor_refuses_an_interval_that_is_not_a_positive_int(every: Any) -> None:
    with pytest.raises(mixprec.OptionError, match="positive int"):
        PrecisionMonitor(every_n_steps=every)


def test_a_fabric_run_with_locate_overflow_names_the_module_whose_forward_overflows() -> None:
    class Overflowing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = make_model()
            self.head = nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x) * 1e6)

    precision = mixprec.get_precision("16-mixed", "cpu", collapse_after=2, on_collapse="raise", locate_overflow=True)
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision])
    model = Overflowing()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))

    def train() -> None:
        for _ in range(5):
            fabric_step(fabric, model, optimizer, overflow=False)

    raised = pytest.raises(mixprec.CollapseError, match="module 'head'")
    with raised, pytest.warns(mixprec.PrecisionWarning, match="located an overflow"):
        train()

    assert precision.telemetry.steps == 2
    assert precision.telemetry.overflow is not None
    assert (precision.telemetry.overflow.module, precision.telemetry.overflow.phase) == ("head", "forward")
