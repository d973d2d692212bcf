"""What a precision object reports about its run: the telemetry snapshot, the overflow found, the options that
govern collapse detection and overflow location, and the ``"mixprec"`` entry of the object's state.

Imports neither torch nor lightning: these are plain data, read by the recording mixin
(:mod:`mixprec._recording`), the resolver, the conformance suite and users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mixprec._errors import OptionError, StateDictError, shown

__all__ = [
    "COLLAPSE_ACTIONS",
    "DEFAULT_COLLAPSE_AFTER",
    "DEFAULT_MARGIN",
    "STATE_ENTRY",
    "TELEMETRY_OPTIONS",
    "Overflow",
    "Settings",
    "Telemetry",
    "check_margin",
    "counters_entry",
    "holds_scaler_state",
    "manifest",
    "manifest_changes",
    "settings",
    "split_state",
]

#: The key of mixprec's own entry in a precision object's ``state_dict()``, beside the GradScaler's keys.
STATE_ENTRY = "mixprec"
#: The options of ``get_precision`` that mixprec itself takes, for every precision and backend.
TELEMETRY_OPTIONS = ("collapse_after", "min_scale", "on_collapse", "locate_overflow", "overflow_margin")
#: What ``on_collapse`` may say.
COLLAPSE_ACTIONS = ("warn", "raise")
#: Consecutive skipped steps that make a collapse by default. A fresh GradScaler (scale 65536) settling on a
#: model skips a handful of steps in a row; twenty in a row have halved the scale twenty times.
DEFAULT_COLLAPSE_AFTER = 20
#: By default, an activation at or above 90% of its dtype's largest finite value counts as about to overflow.
DEFAULT_MARGIN = 0.1
#: The counters the state entry keeps, all ints but the last overflow's step, which may be None.
_COUNTERS = ("steps", "skipped_steps", "consecutive_skips", "last_overflow_step")
#: What the manifest says, in the order a warning lists changes.
_MANIFEST_FIELDS = ("precision", "backend", "distribution", "version", "mixprec")


@dataclass(frozen=True)
class Overflow:
    """Where a non-finite value (or one about to overflow) first appeared, as the overflow locator found it.

    Attributes:
        module: the qualified name of the module (as ``model.named_modules()`` names it; "" is the model itself).
        module_type: the module's class name.
        phase: "forward" (its output) or "backward" (the gradient of its output).
        step: the optimizer step it happened in, counted from 0.
        kind: "inf", "nan" or "near_max" (within the margin of the dtype's largest finite value).
        dtype: the dtype of the tensor, e.g. "float16".
        largest: the largest absolute value in the tensor (inf or nan for a non-finite one).
    """

    module: str
    module_type: str
    phase: Literal["forward", "backward"]
    step: int
    kind: Literal["inf", "nan", "near_max"]
    dtype: str
    largest: float

    def __str__(self) -> str:
        where = f"module {self.module!r}" if self.module else "the model itself"
        where += f" ({self.module_type})"
        what = {
            "inf": "an inf",
            "nan": "a NaN",
            "near_max": f"a value of {self.largest:.6g}, near the largest {self.dtype}",
        }[self.kind]
        part = "forward output" if self.phase == "forward" else "output's gradient in backward"
        return f"{where} produced {what} in its {part} ({self.dtype}) at step {self.step}"


@dataclass(frozen=True)
class Telemetry:
    """A snapshot of what a precision object's optimizer steps did; it never changes once read.

    Every object mixprec's builders build has it as ``precision.telemetry``. Reading it costs a few
    attribute reads; on CUDA it first waits for the last step's scale update to finish on the device
    (mixprec copies the scale to the host asynchronously, so that the steps add no synchronisation).

    Attributes:
        steps: optimizer steps attempted through the object.
        skipped_steps: steps the GradScaler skipped because the gradients held inf or NaN (a backoff of the
            scale across ``scaler.update()``; right for fused and capturable optimizers too).
        consecutive_skips: skipped steps in a row, up to the last one.
        last_step_skipped: whether the last step was skipped; gate an LR scheduler on it.
        last_overflow_step: the step (counted from 0) of the last skipped step; None if none was skipped.
        scale: the GradScaler's scale now; None for a precision without one.
        overflow: where the overflow locator found the first non-finite value; None if it is off or found none.
    """

    steps: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0
    last_step_skipped: bool = False
    last_overflow_step: int | None = None
    scale: float | None = None
    overflow: Overflow | None = None

    def metrics(self, prefix: str = "precision/") -> dict[str, float]:
        """The numbers to log, keyed ``prefix + name``: the scale (where there is one), skipped and attempted steps."""
        values: dict[str, float] = {}
        if self.scale is not None:
            values[f"{prefix}scale"] = self.scale
        values[f"{prefix}skipped_steps"] = float(self.skipped_steps)
        values[f"{prefix}steps"] = float(self.steps)
        return values


@dataclass(frozen=True)
class Settings:
    """The telemetry options of one object, validated (see :func:`settings`)."""

    collapse_after: int = DEFAULT_COLLAPSE_AFTER
    min_scale: float | None = None
    on_collapse: Literal["warn", "raise"] = "warn"
    locate_overflow: bool = False
    overflow_margin: float = DEFAULT_MARGIN


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_margin(margin: Any) -> float:
    """``margin`` as a float if it is a number between 0 and 1 (both excluded), else an OptionError."""
    if not _is_number(margin) or not 0.0 < margin < 1.0:
        raise OptionError(
            f"overflow_margin={_quoted(margin)} is not a number between 0 and 1 (both excluded): it is the fraction of"
            f" the dtype's largest value within which an activation counts as about to overflow; the default is"
            f" {DEFAULT_MARGIN} (values at or above 90% of the largest)."
        )
    return float(margin)


def settings(options: Mapping[str, Any]) -> Settings:
    """The :class:`Settings` for ``options`` (names from :data:`TELEMETRY_OPTIONS`), each value checked.

    Raises:
        OptionError: a value of the wrong type or out of range; the message lists the valid values.
    """
    values = dict(options)
    collapse_after = values.get("collapse_after", DEFAULT_COLLAPSE_AFTER)
    if not _is_int(collapse_after) or collapse_after < 1:
        raise OptionError(
            f"collapse_after={_quoted(collapse_after)} is not an int of at least 1: it is the number of consecutive"
            f" skipped steps that count as a collapsed run (default {DEFAULT_COLLAPSE_AFTER})."
        )
    min_scale = values.get("min_scale")
    if min_scale is not None and (not _is_number(min_scale) or not 0.0 < min_scale < math.inf):
        raise OptionError(
            f"min_scale={_quoted(min_scale)} is not a positive finite number or None: it is the loss scale below"
            " which the run counts as collapsed (default None: no floor; torch's GradScaler documentation calls a"
            " scale below 1.0 a sign that something is wrong)."
        )
    on_collapse = values.get("on_collapse", "warn")
    if on_collapse not in COLLAPSE_ACTIONS or not isinstance(on_collapse, str):
        raise OptionError(
            f"on_collapse={_quoted(on_collapse)} is not one of {list(COLLAPSE_ACTIONS)}: 'warn' issues a"
            " mixprec.PrecisionWarning (the default), 'raise' a mixprec.CollapseError (for CI and unattended runs)."
        )
    locate = values.get("locate_overflow", False)
    if not isinstance(locate, bool):
        raise OptionError(
            f"locate_overflow={_quoted(locate)} is not True or False: True finds the first module whose output or"
            " gradient is not finite (it costs a reduction per module output; default False)."
        )
    margin = check_margin(values.get("overflow_margin", DEFAULT_MARGIN))
    action: Literal["warn", "raise"] = "raise" if on_collapse == "raise" else "warn"
    return Settings(collapse_after, None if min_scale is None else float(min_scale), action, locate, margin)


def _quoted(value: Any) -> str:
    return float.__repr__(value) if isinstance(value, float) else shown(value)


def counters_entry(telemetry: Telemetry) -> dict[str, int | None]:
    """The counters of ``telemetry`` as the state entry keeps them."""
    return {name: getattr(telemetry, name) for name in _COUNTERS}


def holds_scaler_state(state: Any) -> bool:
    """Whether a precision object's saved ``state`` holds GradScaler state: any key beside the ``"mixprec"`` entry
    (a state that is not a mapping counts as holding some, for the error that names it)."""
    if isinstance(state, Mapping):
        return any(key != STATE_ENTRY for key in state)
    return bool(state)


def split_state(state: Any) -> tuple[Any, Mapping[str, Any] | None]:
    """``state`` as (GradScaler state, the ``"mixprec"`` entry or None where an older checkpoint has none).

    A ``state`` that is not a mapping is returned as it is, for the scaler's loader to refuse.

    Raises:
        StateDictError: the ``"mixprec"`` entry is not one that :func:`counters_entry` and a manifest make.
    """
    if not isinstance(state, Mapping) or STATE_ENTRY not in state:
        return state, None
    entry = state[STATE_ENTRY]
    problem = _entry_problem(entry)
    if problem:
        raise StateDictError(
            f"The state's {STATE_ENTRY!r} entry {problem}. It is what a mixprec precision's state_dict() writes:"
            f" pass that dict whole, or drop the {STATE_ENTRY!r} entry to load the GradScaler state alone."
        )
    return {key: value for key, value in state.items() if key != STATE_ENTRY}, entry


def _entry_problem(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return f"is a {type(entry).__name__}, not a dict"
    manifest, counters = entry.get("manifest"), entry.get("telemetry")
    if not isinstance(manifest, Mapping) or not isinstance(counters, Mapping):
        return "lacks its 'manifest' or 'telemetry' dict"
    for name in _COUNTERS:
        value = counters.get(name)
        if name == "last_overflow_step" and value is None:
            continue
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return f"holds telemetry {name}={_quoted(value)}, not an int of at least 0"
    return ""


def manifest_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between the manifest a checkpoint holds and this object's, as "field: saved -> now" lines,
    for the backend, its distribution and its version (a change of precision is the state loader's to refuse)."""
    return [
        f"{field}: {saved.get(field)!r} -> {current.get(field)!r}"
        for field in ("backend", "distribution", "version")
        if saved.get(field) != current.get(field)
    ]


def manifest(precision: str, backend: str | None, distribution: str | None, version: str | None) -> dict[str, Any]:
    """A manifest: which precision, backend, backend distribution and version, and mixprec version made a state."""
    from mixprec import __version__

    return dict(zip(_MANIFEST_FIELDS, (precision, backend, distribution, version, __version__), strict=True))
