"""The checks of the telemetry: every object built through mixprec's builders records its optimizer steps.

``telemetry`` counts the steps and the steps the GradScaler skipped, whatever skipped them, and reports the
scale; its counters travel in the state's ``"mixprec"`` entry; a run that skips step after step is
reported as collapsed. Objects get all of it from :class:`~mixprec.precision.ScalerGuard` (and so from
:class:`~mixprec.precision.AutocastPrecision`) as long as their ``optimizer_step`` and
``load_state_dict`` end in the mixin's.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from lightning.fabric.plugins.precision import Precision

from mixprec._contract import Contract
from mixprec._errors import CollapseError, PrecisionWarning
from mixprec._telemetry import STATE_ENTRY, Telemetry, manifest
from mixprec.testing._base import FABRIC, CheckFailed, Subject, _loss, _poison, _require, _scale, _scaler, check

#: What to change when the telemetry is missing or wrong.
TELEMETRY_FIX = (
    "build the object through mixprec.precision's builders or subclass mixprec.precision.AutocastPrecision; for a"
    " class of your own on one of Lightning's, put mixprec.precision.ScalerGuard first among its bases, and end an"
    " optimizer_step() or load_state_dict() of your own in super()'s"
)


def _telemetry(p: Precision) -> Telemetry:
    telemetry = getattr(p, "telemetry", None)
    if not isinstance(telemetry, Telemetry):
        raise CheckFailed(f"the object has no telemetry (found {telemetry!r}), a mixprec.Telemetry: {TELEMETRY_FIX}")
    return telemetry


def _steps(p: Precision, subject: Subject, poisons: tuple[float | None, ...], model: Any = None) -> Any:
    """One step through ``p`` per entry, with that value (inf) in a gradient or finite (None); returns the model."""
    model = model if model is not None else p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for bad in poisons:
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        if bad is not None:
            _poison(model, bad)
        p.optimizer_step(optimizer)
    return model


def _expect(p: Precision, expected: Telemetry, after: str) -> None:
    got = _telemetry(p)
    _require(got == expected, f"after {after}, telemetry is {got}, not {expected}: {TELEMETRY_FIX}")


@check(targets=FABRIC)
def telemetry_counts_steps(subject: Subject, contract: Contract) -> None:
    """telemetry counts the optimizer steps, the steps skipped for inf/NaN gradients, the run of skips and the step of
    the last one, and reports the GradScaler's scale (None without one)."""
    p = subject.make()
    _expect(p, Telemetry(scale=_scale(p) if contract.loss_scaling else None), "no step")
    if not contract.loss_scaling:
        _steps(p, subject, (None, None, None))
        _expect(p, Telemetry(steps=3), "three steps")
        return
    model = _steps(p, subject, (None, math.inf, math.inf))
    expected = Telemetry(3, 2, 2, True, 2, _scale(p))
    _expect(p, expected, "a finite step and two skipped ones")
    _steps(p, subject, (None,), model)
    _expect(p, Telemetry(4, 2, 0, False, 2, _scale(p)), "a finite step, two skipped ones and a finite one")


@check()
def telemetry_restored_by_load_state_dict(subject: Subject, contract: Contract) -> None:
    """load_state_dict() of a state whose "mixprec" entry holds telemetry counters gives a new object those counters."""
    p = subject.make()
    scaler = getattr(p, "scaler", None)
    counters = {"steps": 7, "skipped_steps": 3, "consecutive_skips": 2, "last_overflow_step": 6}
    entry = {"manifest": manifest(subject.precision, subject.backend.name, None, None), "telemetry": counters}
    state = {**({} if scaler is None else scaler.state_dict()), STATE_ENTRY: entry}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # the manifest names no distribution: "another backend"
        p.load_state_dict(state)
    expected = Telemetry(7, 3, 2, True, 6, _scale(p) if contract.loss_scaling else None)
    _expect(p, expected, f"load_state_dict() of a state holding the counters {counters}")


@check(applies=_scaler, targets=FABRIC)
def collapse_detected(subject: Subject, contract: Contract) -> None:
    """With collapse_after=N and on_collapse="raise", the N-th skipped step in a row raises mixprec.CollapseError,
    and fewer do not."""
    p = subject.make(collapse_after=2, on_collapse="raise")
    model = _steps(p, subject, (math.inf, None, math.inf))
    try:
        _steps(p, subject, (math.inf,), model)
    except CollapseError as exc:
        _require("collapse" in str(exc), f"the CollapseError says {str(exc)!r}, which does not say the run collapsed")
    else:
        raise CheckFailed(
            f"two skipped steps in a row with collapse_after=2, on_collapse='raise' raised nothing (telemetry:"
            f" {_telemetry(p)}): {TELEMETRY_FIX}"
        )
