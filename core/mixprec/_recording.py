"""Recording what each optimizer step did: the mixin that gives every object mixprec builds its ``telemetry``.

A step was skipped exactly when the GradScaler backed its scale off across ``scaler.update()``: torch's
``_amp_update_scale_`` multiplies the scale by ``backoff_factor`` (below 1) when the gradients held an inf
or a NaN, by ``growth_factor`` (above 1) after ``growth_interval`` good steps, and leaves it otherwise.
That is read from the scale alone, so it is right whoever skipped the step: ``GradScaler.step`` for an
ordinary optimizer, the fused kernel of a fused or capturable one (which ``GradScaler.step`` calls
without looking at the result), ``ShardedGradScaler`` agreeing across ranks.

The scale lives on the device. On the CPU reading it costs a few microseconds. On CUDA a read would wait
for the step to finish, so the scale before and after ``update()`` is copied to pinned host memory
asynchronously and counted at the next step or when ``telemetry`` is read, whichever comes first: the
steps themselves add no synchronisation.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import torch

from mixprec._errors import CollapseError, PrecisionWarning
from mixprec._telemetry import (
    STATE_ENTRY,
    Overflow,
    Settings,
    Telemetry,
    counters_entry,
    manifest,
    manifest_changes,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import nn

    from mixprec._locate import OverflowLocator

__all__ = ["TelemetryRecorder"]


class _Record:
    """The counters of one object, and what the counting needs: settings, manifest, a step in flight, locators."""

    def __init__(self) -> None:
        self.steps = 0
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.last_overflow_step: int | None = None
        #: The scale after the last counted step; None before the first (the scaler is asked then).
        self.scale: float | None = None
        #: The scale before the first skipped step of the current run of skips, where known.
        self.streak_from: float | None = None
        self.below_floor = False
        self.settings = Settings()
        self.manifest: dict[str, Any] | None = None
        #: The scale before and after the last step's update on the host (a CUDA copy in flight), and its event.
        self.pending: tuple[torch.Tensor, Any] | None = None
        #: Locators watching the model: the one ``locate_overflow=True`` installs, and those of ``locate_overflow()``.
        self.locators: list[OverflowLocator] = []

    def current_step(self) -> int:
        """The step being taken now, counted from 0: the steps counted so far."""
        self.resolve()
        return self.steps

    def overflow(self) -> Overflow | None:
        return next((locator.found for locator in self.locators if locator.found is not None), None)

    def resolve(self) -> None:
        """Count the step whose scales are still being copied from the device, waiting for the copy if need be."""
        if self.pending is None:
            return
        host, event = self.pending
        self.pending = None
        event.synchronize()
        before, after = host.tolist()
        self.count(before, after)

    def count(self, before: float | None, after: float | None) -> None:
        """Count one step whose scale went from ``before`` to ``after`` across ``update()`` (None: no scaler)."""
        skipped = before is not None and after is not None and after < before
        if skipped:
            if self.consecutive_skips == 0:
                self.streak_from = before
            self.consecutive_skips += 1
            self.skipped_steps += 1
            self.last_overflow_step = self.steps
        else:
            self.consecutive_skips = 0
        self.steps += 1
        self.scale = after
        self._check_collapse(skipped)

    def _check_collapse(self, skipped: bool) -> None:
        reasons = []
        after = self.settings.collapse_after
        if skipped and self.consecutive_skips == after:
            first = self.steps - after
            fell = f", and the scale fell from {self.streak_from:g} to {self.scale:g}" if self.streak_from else ""
            reasons.append(
                f"the GradScaler skipped the last {after} optimizer steps in a row (steps {first} to {self.steps - 1})"
                f"{fell}: the weights have not changed since step {first}"
            )
        floor = self.settings.min_scale
        below = floor is not None and self.scale is not None and self.scale < floor
        if below and not self.below_floor:
            reasons.append(f"the loss scale fell to {self.scale:g}, below min_scale={floor:g}")
        self.below_floor = below
        if reasons:
            self._collapsed("; ".join(reasons))

    def _collapsed(self, what: str) -> None:
        precision = (self.manifest or {}).get("precision", "mixed precision")
        found = self.overflow()
        where = (
            f" The overflow locator found the first one: {found}."
            if found is not None
            else " Find where: get_precision(..., locate_overflow=True), or `with mixprec.locate_overflow(model,"
            " precision):` around a few steps, names the first module whose output or gradient is not finite."
        )
        message = (
            f"{precision!r} training has collapsed: {what}. Each skipped step found an inf or NaN in the gradients;"
            " when that happens step after step, the likely cause is an inf or NaN in the forward pass (an activation"
            " beyond float16's largest value of 65504, a log of 0, a division by 0), not the scale, which backing off"
            f" cannot fix.{where} Then keep that computation in float32, or train in 'bf16-mixed' where the hardware"
            " has it (bfloat16 has float32's range and needs no loss scaling)."
        )
        if self.settings.on_collapse == "raise":
            raise CollapseError(message)
        warnings.warn(message, PrecisionWarning, stacklevel=6)


def _scale_before(scaler: Any) -> float | torch.Tensor | None:
    """The scale before a step: a float on the CPU, a copy of the device tensor elsewhere; None without a scaler."""
    if scaler is None or not scaler.is_enabled():
        return None
    scale = scaler._scale
    if scale is None:  # the scaler has not scaled a loss yet: its scale is the initial one (torch's get_scale too)
        return float(scaler._init_scale)
    return float(scale.item()) if scale.device.type != "cuda" else scale.clone()


class TelemetryRecorder:
    """A mixin for Lightning precision classes: records every optimizer step, reports it as ``telemetry``, keeps it
    in ``state_dict()`` under ``"mixprec"`` with a manifest, and watches for a collapsed run.

    :class:`~mixprec.precision.ScalerGuard` inherits it, so every class with that mixin records; it
    reads the object's ``precision`` and ``scaler`` (None where the class has none).
    """

    precision: Any
    scaler: Any = None

    @functools.cached_property
    def _telemetry_record(self) -> _Record:
        return _Record()

    @property
    def telemetry(self) -> Telemetry:
        """What the optimizer steps through this object did so far (see :class:`~mixprec.Telemetry`)."""
        record = self._telemetry_record
        record.resolve()
        return Telemetry(
            steps=record.steps,
            skipped_steps=record.skipped_steps,
            consecutive_skips=record.consecutive_skips,
            last_step_skipped=record.consecutive_skips > 0,
            last_overflow_step=record.last_overflow_step,
            scale=self._current_scale(record),
            overflow=record.overflow(),
        )

    def _current_scale(self, record: _Record) -> float | None:
        if self.scaler is None:
            return None
        if record.scale is not None:
            return record.scale
        return float(self.scaler.get_scale())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        # Recording only: what the step does is the classes' below this mixin.
        record = self._telemetry_record
        before = _scale_before(self.scaler)
        result = super().optimizer_step(*args, **kwargs)  # type: ignore[misc]
        self._record_step(record, before)
        return result

    def _record_step(self, record: _Record, before: float | torch.Tensor | None) -> None:
        record.resolve()
        after = None if before is None else self.scaler._scale
        if after is None:
            # No scaler, or update() did not run (the Trainer skips the step when training_step returned None).
            record.count(None, None)
            return
        if isinstance(before, float):
            if after.device.type != "cuda":
                record.count(before, float(after.item()))
                return
            before = torch.full((), before, dtype=after.dtype, device=after.device)
        assert isinstance(before, torch.Tensor)
        host = torch.empty(2, dtype=after.dtype, pin_memory=True)
        host.copy_(torch.stack((before, after)), non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(after.device))  # the stream the copy ran on: the scale's device's
        record.pending = (host, event)

    def convert_module(self, module: nn.Module) -> nn.Module:
        module = super().convert_module(module)  # type: ignore[misc]
        record = self._telemetry_record
        if record.settings.locate_overflow:
            from mixprec._locate import OverflowLocator

            record.locators.append(
                OverflowLocator(module, margin=record.settings.overflow_margin, step=record.current_step)
            )
        return module

    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict())  # type: ignore[misc]
        state[STATE_ENTRY] = {"manifest": dict(self._manifest()), "telemetry": counters_entry(self.telemetry)}
        return state

    def _manifest(self) -> dict[str, Any]:
        return self._telemetry_record.manifest or manifest(self.precision, None, None, None)

    def _stamp_telemetry(self, made_by: dict[str, Any], settings: Settings) -> None:
        """Set what the resolver knows: the manifest (precision, backend and versions) and the telemetry options."""
        record = self._telemetry_record
        record.manifest = made_by
        record.settings = settings

    def _restore_telemetry(self, entry: Mapping[str, Any] | None) -> None:
        """Take the counters of a checkpoint's ``"mixprec"`` entry (None: an older checkpoint, nothing to take), and
        warn where it was saved under another backend or backend version."""
        record = self._telemetry_record
        record.resolve()
        record.scale = None  # the scaler's own state was just loaded: ask it
        if entry is None:
            return
        saved, counters = entry["manifest"], entry["telemetry"]
        current = self._manifest()
        changes = manifest_changes(saved, current) if saved.get("precision") == current["precision"] else []
        if changes:
            warnings.warn(
                f"This {current['precision']!r} state was saved under another backend: {'; '.join(changes)}."
                " It loads, but the numerics may differ from the run that saved it (another backend may build the"
                " object differently); resume with backend= set to the one that saved it to keep them.",
                PrecisionWarning,
                stacklevel=4,
            )
        record.steps = counters["steps"]
        record.skipped_steps = counters["skipped_steps"]
        record.consecutive_skips = counters["consecutive_skips"]
        record.last_overflow_step = counters["last_overflow_step"]
        record.streak_from = None
