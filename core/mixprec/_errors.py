"""Every error and warning mixprec raises for something a user or a plugin did, and how values are quoted in them."""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ClosureError",
    "CollapseError",
    "DeviceError",
    "LocateOverflowError",
    "OptimizerDeviceError",
    "OptionError",
    "PluginError",
    "PrecisionError",
    "PrecisionWarning",
    "StateDictError",
    "UnknownPrecisionError",
    "UnscalingError",
]


class PrecisionError(ValueError):
    """Base class of every error a user can cause. The message always says what to do."""


class UnknownPrecisionError(PrecisionError):
    """The precision string names nothing mixprec or an installed backend offers."""


class DeviceError(PrecisionError):
    """The device is malformed or of a type no installed backend knows."""


class BackendNotFoundError(PrecisionError):
    """No installed backend offers the precision on the device type; names what to install."""


class BackendUnavailableError(PrecisionError):
    """Backends are installed for the request but none can run it here; says why."""


class OptionError(PrecisionError):
    """An option passed through ``get_precision(**options)`` is unknown or invalid."""


class StateDictError(PrecisionError):
    """A state dict cannot be loaded into this precision object."""


class UnscalingError(PrecisionError, NotImplementedError):
    """Gradients cannot be unscaled where Lightning would unscale them.

    Raised for clipping with an optimizer that unscales inside its own ``step()``. It is also a
    ``NotImplementedError`` (and so a ``RuntimeError``), the types Lightning's Fabric and Trainer
    raise there, so that code written to catch Lightning's error still catches mixprec's.
    """


class ClosureError(PrecisionError, TypeError):
    """An optimizer that evaluates its closure several times in one step (LBFGS) cannot step through a GradScaler.

    It is also a ``TypeError``, the type Lightning's Fabric raises for LBFGS with a GradScaler, so that code
    written to catch Lightning's error still catches mixprec's.
    """


class CollapseError(PrecisionError):
    """Mixed-precision training stopped making progress: the GradScaler skipped step after step, or the scale fell
    below its floor. Raised instead of a warning with ``get_precision(..., on_collapse="raise")``."""


class LocateOverflowError(PrecisionError):
    """The overflow locator cannot watch this model here (a compiled model or region); the message says why."""


class OptimizerDeviceError(PrecisionError):
    """An optimizer's parameters are not on the precision's device and get no gradients: it was built before the
    model was moved, and would update nothing."""


class PluginError(PrecisionError):
    """A plugin failed to load or describes itself wrongly (raised in strict mode and by ``register``)."""


class PrecisionWarning(UserWarning):
    """Something works but not as well as the user may think (an emulated dtype, a skipped plugin)."""


def shown(value: object) -> str:
    """``value`` as an error message quotes it: the repr of a str or int, shortened, else its type.

    User input can be megabytes long, an int can have more digits than Python will print, and a
    third-party object's own ``__repr__`` can raise: none of that may break the message.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 64:
            return f"(an integer of {value.bit_length()} bits)"
        return repr(int.__int__(value))
    if isinstance(value, str):
        text = repr(str.__str__(value))
        return text if len(text) <= 80 else f"{text[:60]}...' ({len(value)} characters)"
    if isinstance(value, bool) or value is None:
        return repr(value)
    return f"(a {type(value).__name__})"
