"""mixprec for the Lightning Trainer: :class:`PrecisionMonitor`, a callback that logs the precision's telemetry.

``import mixprec`` never imports this module (it imports ``lightning.pytorch``); import it where a
Trainer is built::

    from mixprec.lightning import PrecisionMonitor

    trainer = Trainer(plugins=[get_precision("16-mixed", "cuda", target="trainer")], callbacks=[PrecisionMonitor()])
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from mixprec._errors import OptionError, PrecisionError

__all__ = ["PrecisionMonitor"]


class PrecisionMonitor(Callback):
    """Log the loss scale and the skipped and attempted optimizer steps to every logger the Trainer has.

    In the spirit of Lightning's ``LearningRateMonitor``: after an optimizer step whose number is a
    multiple of ``every_n_steps``, it logs ``precision.telemetry.metrics(prefix)`` of the Trainer's
    precision plugin, ``{prefix}scale`` (where there is a GradScaler), ``{prefix}skipped_steps`` and
    ``{prefix}steps``, at the Trainer's global step.

    Args:
        every_n_steps: log every this many optimizer steps; None follows the Trainer's ``log_every_n_steps``.
        prefix: put before each metric's name.

    Raises:
        OptionError: ``every_n_steps`` is not a positive int.
        PrecisionError: when training starts, if the Trainer has no logger, or its precision plugin was not
            built by mixprec (it has no ``telemetry``).
    """

    def __init__(self, every_n_steps: int | None = None, prefix: str = "precision/") -> None:
        if every_n_steps is not None and (
            not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1
        ):
            raise OptionError(
                f"every_n_steps={every_n_steps!r} is not a positive int: pass how many optimizer steps apart to log,"
                " or None to follow the Trainer's log_every_n_steps."
            )
        self.every_n_steps = every_n_steps
        self.prefix = prefix
        self._logged_step = -1

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.loggers:
            raise PrecisionError(
                "PrecisionMonitor logs to the Trainer's loggers, and this Trainer has none (logger=False): pass a"
                " logger (Trainer(logger=CSVLogger('logs'))) or leave the callback out."
            )
        if not hasattr(trainer.precision_plugin, "telemetry"):
            raise PrecisionError(
                f"The Trainer's precision plugin, {type(trainer.precision_plugin).__name__}, records no telemetry: pass"
                " the one mixprec builds, Trainer(plugins=[mixprec.get_precision(..., target='trainer')])."
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        interval = self.every_n_steps or trainer.log_every_n_steps  # type: ignore[attr-defined]
        # With gradient accumulation several batches end at one global step: log it once.
        if step == self._logged_step or step % max(1, interval):
            return
        self._logged_step = step
        metrics = trainer.precision_plugin.telemetry.metrics(self.prefix)  # type: ignore[attr-defined]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
