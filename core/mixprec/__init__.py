"""mixprec: the right mixed-precision plugin for a precision and a device, from installable backends.

``import mixprec`` imports neither torch nor lightning: torch is imported when the presence of a
device is first checked (the first ``get_precision``, ``explain`` or ``available``), lightning when
a precision object is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mixprec._backend import ALIASES, ANY_DEVICE, Availability, Backend, Device, Request
from mixprec._contract import STANDARD_CONTRACTS, Contract, OptionTrial
from mixprec._errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    ClosureError,
    CollapseError,
    DeviceError,
    LocateOverflowError,
    OptimizerDeviceError,
    OptionError,
    PluginError,
    PrecisionError,
    PrecisionWarning,
    StateDictError,
    UnknownPrecisionError,
    UnscalingError,
)
from mixprec._hookspec import ENTRY_POINT_GROUP, hookimpl
from mixprec._import_lock import IMPORT_LOCK as _IMPORT_LOCK
from mixprec._import_lock import import_module as _import_module

if TYPE_CHECKING:
    from mixprec._auto import AUTO_ORDER
    from mixprec._explain import Candidate, Explanation, explain
    from mixprec._listing import Record, available
    from mixprec._locate import OverflowLocator, locate_overflow
    from mixprec._resolver import get_precision
    from mixprec._telemetry import Overflow, Telemetry
    from mixprec._tune import Measurement, TuneResult, tune

# The resolver and the registry (and with it importlib.metadata) load at first use, so that
# ``import mixprec`` in a plugin or a CLI costs little more than importing pluggy.
_LAZY = {
    "AUTO_ORDER": "mixprec._auto",
    "Candidate": "mixprec._explain",
    "Explanation": "mixprec._explain",
    "explain": "mixprec._explain",
    "Record": "mixprec._listing",
    "available": "mixprec._listing",
    "get_precision": "mixprec._resolver",
    "Measurement": "mixprec._tune",
    "TuneResult": "mixprec._tune",
    "tune": "mixprec._tune",
    "locate_overflow": "mixprec._locate",
    "OverflowLocator": "mixprec._locate",
    "Overflow": "mixprec._telemetry",
    "Telemetry": "mixprec._telemetry",
}

__version__ = "0.1.0"

__all__ = [
    "ALIASES",
    "ANY_DEVICE",
    "AUTO_ORDER",
    "ENTRY_POINT_GROUP",
    "Availability",
    "Backend",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Candidate",
    "ClosureError",
    "CollapseError",
    "Contract",
    "Device",
    "DeviceError",
    "Explanation",
    "Measurement",
    "LocateOverflowError",
    "OptimizerDeviceError",
    "OptionError",
    "Overflow",
    "OverflowLocator",
    "OptionTrial",
    "PluginError",
    "PrecisionError",
    "PrecisionWarning",
    "Record",
    "Request",
    "STANDARD_CONTRACTS",
    "StateDictError",
    "TuneResult",
    "Telemetry",
    "UnknownPrecisionError",
    "UnscalingError",
    "__version__",
    "available",
    "explain",
    "get_precision",
    "hookimpl",
    "locate_overflow",
    "register",
    "tune",
    "unregister",
]


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object (a module or any object with a ``mixprec_backends`` hookimpl) in this process.

    For notebooks and tests; installed plugins are found through the ``mixprec.backends`` entry point.
    It is taken whole or not at all: a malformed description, a hook that raises (also while what it
    returned is iterated), a name that is already taken or is not a str (``name``, else the plugin's
    ``__name__``), or a hook that calls back into mixprec while it is loaded raises
    :class:`PluginError` (``TypeError`` for a ``name`` that is not a str) and changes nothing.
    Returns the plugin's name.
    """
    with _IMPORT_LOCK:
        from mixprec._registry import registry

    return registry.register(plugin, name)


def unregister(name: str) -> None:
    """Undo :func:`register`: remove the plugin registered in this process as ``name``, with all its backends.

    For notebooks and tests. It is taken whole or not at all: afterwards no backend of the plugin is
    listed, explained or selected, every answer mixprec had cached is forgotten (as after
    ``register``), and the name is free to register again. A name that :func:`register` did not add
    (one never registered, already unregistered, or an installed plugin, which ``MIXPREC_BLOCK``
    leaves out) raises :class:`PluginError` and changes nothing; a ``name`` that is not a str raises
    ``TypeError``.
    """
    from mixprec._registry import registry

    registry.unregister(name)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mixprec' has no attribute {name!r}")
    # Under the import lock, so that threads asking for lazy names at once never see a half-imported module.
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value
