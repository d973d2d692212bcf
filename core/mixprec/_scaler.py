"""The GradScaler's settings and state, checked against the limits of the tensors torch keeps them in.

``torch.amp.GradScaler`` keeps its scale in a float32 tensor and its growth tracker in an int32
tensor, and hands the growth interval to an int64 kernel argument; it checks none of this. A value
that fits a Python float but not a float32 (``init_scale=3.5e38``) becomes an infinite scale, one
too small (``init_scale=5e-324``, ``backoff_factor=5e-324``) becomes a zero scale and NaN weights, a
growth interval past the tracker's range is never reached or overflows the kernel. A scale that one
backoff takes below the smallest normal float32 is as bad: torch then unscales the gradients with an
infinite reciprocal without noticing, and the weights turn inf or NaN. The checks here
hold every value to what the tensors can keep, for the options a user passes and for a state a
checkpoint hands back, and say the valid range when a value is outside it.

Imports neither torch nor lightning: the limits are IEEE float32's and int32's.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mixprec._errors import OptionError, StateDictError, shown
from mixprec._vocabulary import SCALER_OPTIONS

if TYPE_CHECKING:
    import torch

__all__ = ["SCALER_OPTIONS", "STATE_KEYS", "check_options", "load_state"]

#: What ``GradScaler.state_dict()`` holds for an enabled scaler (torch >= 2.0).
STATE_KEYS = frozenset({"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"})

#: The largest finite float32, and the smallest normal one: below it the scale's reciprocal, which
#: unscales the gradients, overflows float32 (1 / 2**-126 is 2**126; 1 / 2**-127 is already 2**127,
#: and a subnormal scale may be flushed to zero).
FLOAT32_MAX = (2 - 2**-23) * 2.0**127
FLOAT32_TINY = 2.0**-126
#: The growth tracker is an int32 tensor that counts up to the growth interval.
INT32_MAX = 2**31 - 1
#: ``torch.amp.GradScaler``'s defaults for the options the scale after a backoff depends on.
_DEFAULT_INIT_SCALE = 2.0**16
_DEFAULT_BACKOFF_FACTOR = 0.5


def _float32(value: Any) -> float | None:
    """``value`` rounded to the float32 torch keeps it as; None if it is not an int or a float (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float's range
        return math.inf if value > 0 else -math.inf
    try:
        return float(struct.unpack("f", struct.pack("f", as_float))[0])
    except OverflowError:  # Python < 3.12 refuses to pack a float that rounds past float32's range
        return math.copysign(math.inf, as_float)


def _int32(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= INT32_MAX


def _between(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        f = _float32(value)
        if f is None or math.isnan(f):
            return False
        above = f > low if open_low else f >= low
        below = f < high if open_high else f <= high
        return above and below

    return test


_SCALE = (
    _between(FLOAT32_TINY, FLOAT32_MAX),
    f"a number from {FLOAT32_TINY:.8g} to {FLOAT32_MAX:.8g}: the scale is a float32 tensor, and below the smallest"
    " normal float32 its reciprocal, which unscales the gradients, overflows",
)
_GROWTH_FACTOR = (
    _between(1.0, FLOAT32_MAX, open_low=True),
    f"a number greater than 1 and at most {FLOAT32_MAX:.8g} once rounded to float32, the scale's dtype (the smallest"
    " is 1.0000001)",
)
_BACKOFF_FACTOR = (
    _between(0.0, 1.0, open_low=True, open_high=True),
    "a number between 0 and 1, both excluded, once rounded to float32, the scale's dtype (from 1.4e-45 to 0.99999994)",
)
_GROWTH_INTERVAL = (
    lambda v: _int32(v, 1),
    f"an int from 1 to {INT32_MAX}: the growth tracker that counts up to it is an int32 tensor",
)
_GROWTH_TRACKER = (lambda v: _int32(v, 0), f"an int from 0 to {INT32_MAX}, the range of the int32 growth tracker")

#: Each option's test and the words an error message says it must be.
_OPTION_VALUES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "init_scale": _SCALE,
    "growth_factor": _GROWTH_FACTOR,
    "backoff_factor": _BACKOFF_FACTOR,
    "growth_interval": _GROWTH_INTERVAL,
}
#: The same for each entry of a GradScaler's state.
_STATE_VALUES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "scale": _SCALE,
    "growth_factor": _GROWTH_FACTOR,
    "backoff_factor": _BACKOFF_FACTOR,
    "growth_interval": _GROWTH_INTERVAL,
    "_growth_tracker": _GROWTH_TRACKER,
}


def _quoted(value: Any) -> str:
    """``value`` as a message quotes it: a float in full (its own repr may be a subclass's), else as ``shown``."""
    return float.__repr__(value) if isinstance(value, float) else shown(value)


def _problems(values: Mapping[str, Any], rules: Mapping[str, tuple[Callable[[Any], bool], str]]) -> list[str]:
    return [
        f"{name}={_quoted(values[name])} (must be {rules[name][1]})"
        for name in rules
        if name in values and not rules[name][0](values[name])
    ]


def check_options(options: Mapping[str, Any]) -> dict[str, float | int]:
    """The GradScaler keyword arguments for ``options`` (names from :data:`SCALER_OPTIONS`), each value
    checked and made a plain float or int.

    Raises:
        OptionError: a value is outside what torch's tensors can keep, or one backoff from the initial
            scale leaves a scale below the smallest normal float32; the message names each bad option
            and its valid range.
    """
    bad = _problems(options, _OPTION_VALUES)
    if bad:
        raise OptionError(f"Invalid GradScaler option(s): {'; '.join(bad)}.")
    init_scale = float(options.get("init_scale", _DEFAULT_INIT_SCALE))
    backoff_factor = float(options.get("backoff_factor", _DEFAULT_BACKOFF_FACTOR))
    backed_off = _float32(init_scale * backoff_factor)
    if backed_off is None or backed_off < FLOAT32_TINY:
        # torch then unscales by an infinite reciprocal without noticing: the weights turn inf or NaN.
        raise OptionError(
            f"init_scale * backoff_factor = {init_scale!r} * {backoff_factor!r} is below {FLOAT32_TINY:.8g}, the"
            " smallest normal float32: the first step whose gradients overflow would leave a scale whose reciprocal"
            " overflows float32, and torch would unscale the gradients to inf and NaN. Raise init_scale or"
            " backoff_factor (torch's defaults are 65536.0 and 0.5)."
        )
    return {name: int(value) if name == "growth_interval" else float(value) for name, value in options.items()}


def load_state(scaler: torch.amp.GradScaler | None, state: Any, precision: str) -> None:
    """Load a GradScaler ``state`` into ``scaler`` whole, or raise: never drop or half-load it.

    ``scaler`` is None for a precision without one: then only an empty state loads.

    Raises:
        StateDictError: ``state`` is not a mapping; it holds GradScaler state and there is no
            scaler; it is empty and there is a scaler; or it lacks an entry or has one outside the
            tensors' limits. The message says what was given and what to load instead.
    """
    if not isinstance(state, Mapping):
        raise StateDictError(
            f"Cannot load a {type(state).__name__} into a {precision!r} precision: pass the dict that"
            " its state_dict() returned."
        )
    if scaler is None:
        if state:
            raise StateDictError(
                f"This {precision!r} precision has no GradScaler, but the state holds GradScaler state (keys"
                f" {', '.join(sorted(shown(key) for key in state))}). It was saved from a precision with a scaler:"
                " load it into a '16-mixed' object, or leave the precision state out of the checkpoint."
            )
        return
    if not state:
        raise StateDictError(
            f"The state holds no GradScaler state for this {precision!r} precision:"
            " it was saved from a precision without a scaler. Load the checkpoint into an object of"
            " that precision, or load nothing and start with a fresh scale."
        )
    missing = sorted(STATE_KEYS - set(state))
    if missing:
        raise StateDictError(
            f"The GradScaler state is incomplete: missing {missing}. Pass the whole dict that state_dict() returned."
        )
    bad = _problems(state, _STATE_VALUES)
    if bad:
        raise StateDictError(
            f"The GradScaler state has value(s) torch's scaler cannot keep: {'; '.join(bad)}. Pass the dict that"
            " state_dict() returned, or load nothing and start with a fresh scale."
        )
    scaler.load_state_dict({key: state[key] for key in STATE_KEYS})
