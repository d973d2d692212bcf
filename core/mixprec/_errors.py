"""Every error and warning mixprec raises for something a user or a plugin did."""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "BackendUnavailableError",
    "DeviceError",
    "OptionError",
    "PluginError",
    "PrecisionError",
    "PrecisionWarning",
    "StateDictError",
    "UnknownPrecisionError",
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


class PluginError(PrecisionError):
    """A plugin failed to load or describes itself wrongly (raised in strict mode and by ``register``)."""


class PrecisionWarning(UserWarning):
    """Something works but not as well as the user may think (an emulated dtype, a skipped plugin)."""
