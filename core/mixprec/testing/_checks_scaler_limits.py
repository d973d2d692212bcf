"""The checks of the GradScaler's limits: options and checkpoint state the scaler's tensors cannot keep are refused.

``torch.amp.GradScaler`` keeps its scale in a float32 tensor and its growth tracker in an int32 one,
and checks none of the values it is given: a scale of ``3.5e38`` becomes inf, one below the smallest
normal float32 unscales gradients to inf and NaN, a growth interval of 0 or past int32 is never
reached. A precision with loss scaling refuses such values where the user gives them
(``get_precision(..., init_scale=...)``: :class:`mixprec.OptionError`) and where a checkpoint hands
them back (``load_state_dict``: :class:`mixprec.StateDictError`), and takes every value inside the
limits, the limits themselves included, as the plain float or int torch keeps.
``mixprec.precision.make_scaler(request)`` builds such a scaler, and ``ScalerGuard`` loads such state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lightning.fabric.plugins.precision import Precision

from mixprec._contract import Contract
from mixprec._errors import OptionError, StateDictError
from mixprec.testing._base import CheckFailed, Subject, _require, _scaler, check

__all__ = [
    "scaler_options_at_their_limits_accepted",
    "scaler_options_out_of_range_refused",
    "scaler_state_at_its_limits_loaded",
    "scaler_state_out_of_range_refused",
]

#: The largest finite float32 and the smallest normal one.
FLOAT32_MAX = (2 - 2**-23) * 2.0**127
FLOAT32_TINY = 2.0**-126
INT32_MAX = 2**31 - 1
#: The float32 right above 1 and right below it.
ABOVE_ONE = 1 + 2**-23
BELOW_ONE = 1 - 2**-24

#: GradScaler options no scaler can keep: past float32's range or below its normal numbers, rounding
#: (in float32, the scale's dtype) onto a bound, outside an open interval, not a number, not an int.
BAD_OPTIONS: tuple[Mapping[str, Any], ...] = (
    {"init_scale": math.inf},
    {"init_scale": math.nan},
    {"init_scale": 0.0},
    {"init_scale": -1024.0},
    {"init_scale": 3.5e38},
    {"init_scale": 10**400},
    {"init_scale": 1e-39},
    {"init_scale": True},
    {"init_scale": "1024"},
    {"growth_factor": 1.0},
    {"growth_factor": 1.00000001},
    {"growth_factor": 0.5},
    {"growth_factor": math.inf},
    {"backoff_factor": 1.0},
    {"backoff_factor": 0.99999999},
    {"backoff_factor": 0.0},
    {"backoff_factor": 1.5},
    {"backoff_factor": math.nan},
    {"growth_interval": 0},
    {"growth_interval": -1},
    {"growth_interval": 2**31},
    {"growth_interval": 1.5},
    {"growth_interval": True},
    # Each is fine alone, but one backoff leaves a scale below the smallest normal float32.
    {"init_scale": FLOAT32_TINY, "backoff_factor": 0.5},
    {"init_scale": 2.0**-125, "backoff_factor": 0.25},
)
#: GradScaler options at the limits, each kept: bounds that are part of the range, ints for floats.
GOOD_OPTIONS: tuple[Mapping[str, Any], ...] = (
    {"init_scale": FLOAT32_MAX},
    {"init_scale": 2.0**-125, "backoff_factor": 0.5},
    # Rounds to 2**-125 in float32, as the scale torch keeps: one backoff leaves the smallest normal float32.
    {"init_scale": 2.0**-125 * (1 - 2**-40), "backoff_factor": 0.5},
    {"init_scale": 2.0**100, "backoff_factor": 2.0**-149},
    {"growth_factor": ABOVE_ONE},
    {"growth_factor": FLOAT32_MAX},
    {"backoff_factor": BELOW_ONE},
    {"growth_interval": 1},
    {"growth_interval": INT32_MAX},
    {"init_scale": 1024, "growth_factor": 2, "growth_interval": 7},
)
#: Entries of a GradScaler state no scaler can keep.
BAD_STATE: tuple[tuple[str, Any], ...] = (
    ("scale", math.inf),
    ("scale", math.nan),
    ("scale", 0.0),
    ("scale", -2.0),
    ("scale", 3.5e38),
    ("scale", 1e-39),
    ("scale", True),
    ("scale", "1024.0"),
    ("growth_factor", 1.0),
    ("backoff_factor", 1.0),
    ("backoff_factor", 0.0),
    ("growth_interval", 0),
    ("growth_interval", 2**31),
    ("growth_interval", 2.5),
    ("_growth_tracker", -1),
    ("_growth_tracker", 2**31),
    ("_growth_tracker", 0.5),
    ("_growth_tracker", True),
)
#: Entries of a GradScaler state at the limits, each kept.
GOOD_STATE: tuple[tuple[str, Any], ...] = (
    ("scale", FLOAT32_TINY),
    ("scale", FLOAT32_MAX),
    ("growth_factor", ABOVE_ONE),
    ("backoff_factor", BELOW_ONE),
    ("growth_interval", 1),
    ("growth_interval", INT32_MAX),
    ("_growth_tracker", 0),
    ("_growth_tracker", INT32_MAX),
)
#: What to change when a check here fails.
FIX = (
    "build the GradScaler with mixprec.precision.make_scaler(request), which checks and normalises the options,"
    " and load state through mixprec.precision.ScalerGuard (mixprec's classes have it)"
)


def _shown(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={float.__repr__(v) if isinstance(v, float) else repr(v)}" for name, v in options.items())


def _state(p: Precision) -> dict[str, Any]:
    scaler = getattr(p, "scaler", None)
    if scaler is None:
        raise CheckFailed("scaler is None; the contract scales the loss: build it with mixprec.precision.make_scaler")
    return dict(scaler.state_dict())


@check(applies=_scaler)
def scaler_options_out_of_range_refused(subject: Subject, contract: Contract) -> None:
    """GradScaler options its float32 scale or int32 tracker cannot keep are refused with mixprec.OptionError."""
    for bad in BAD_OPTIONS:
        try:
            subject.make(**bad)
        except OptionError as exc:
            _require(bool(str(exc)), f"get_precision({_shown(bad)}) raised an OptionError without a message")
        except Exception as exc:
            raise CheckFailed(
                f"get_precision({_shown(bad)}) raised {type(exc).__name__}: {exc}; the contract wants"
                f" mixprec.OptionError saying the valid range: {FIX}"
            ) from None
        else:
            raise CheckFailed(
                f"get_precision({_shown(bad)}) built an object, but its GradScaler cannot keep that value (float32"
                f" scale, int32 growth tracker), so it would train with an inf or zero scale or never grow: {FIX}"
            )


@check(applies=_scaler)
def scaler_options_at_their_limits_accepted(subject: Subject, contract: Contract) -> None:
    """GradScaler options at the limits of its range are kept, as the float or int torch keeps them."""
    for good in GOOD_OPTIONS:
        try:
            p = subject.make(**good)
        except Exception as exc:
            raise CheckFailed(
                f"get_precision({_shown(good)}) raised {type(exc).__name__}: {exc}; the values are inside what the"
                f" GradScaler can keep (the limits included) and must be taken: {FIX}"
            ) from None
        state = _state(p)
        for name, value in good.items():
            key = "scale" if name == "init_scale" else name
            kind = int if name == "growth_interval" else float
            kept = state.get(key)
            _require(
                type(kept) is kind and kept == value,
                f"get_precision({_shown(good)}): the GradScaler's state_dict() holds {key}={kept!r}"
                f" ({type(kept).__name__}); it must keep {kind(value)!r}, a {kind.__name__}: {FIX}",
            )


@check(applies=_scaler)
def scaler_state_out_of_range_refused(subject: Subject, contract: Contract) -> None:
    """load_state_dict() refuses GradScaler state holding a value the scaler cannot keep, and changes nothing."""
    for key, bad in BAD_STATE:
        p = subject.make()
        before = _state(p)
        given = {**before, key: bad}
        try:
            p.load_state_dict(given)
        except StateDictError as exc:
            _require(bool(str(exc)), f"load_state_dict() of {key}={bad!r} raised a StateDictError without a message")
        except Exception as exc:
            raise CheckFailed(
                f"load_state_dict() of a state with {key}={bad!r} raised {type(exc).__name__}: {exc}; the contract"
                f" wants mixprec.StateDictError: {FIX}"
            ) from None
        else:
            raise CheckFailed(
                f"load_state_dict() took a state with {key}={bad!r}, which the GradScaler cannot keep (a float32"
                f" scale, an int32 growth tracker): refuse it with mixprec.StateDictError: {FIX}"
            )
        after = _state(p)
        _require(after == before, f"the refused load_state_dict() of {key}={bad!r} changed the state to {after}")


@check(applies=_scaler)
def scaler_state_at_its_limits_loaded(subject: Subject, contract: Contract) -> None:
    """load_state_dict() loads GradScaler state whose values lie at the limits of what the scaler keeps."""
    for key, good in GOOD_STATE:
        p = subject.make()
        given = {**_state(p), key: good}
        try:
            p.load_state_dict(given)
        except Exception as exc:
            raise CheckFailed(
                f"load_state_dict() of a state with {key}={good!r} raised {type(exc).__name__}: {exc}; the value is"
                f" one the GradScaler keeps (a limit of its range) and must load: {FIX}"
            ) from None
        kept = _state(p).get(key)
        _require(kept == good, f"after load_state_dict() of {key}={good!r}, state_dict() holds {key}={kept!r}")
