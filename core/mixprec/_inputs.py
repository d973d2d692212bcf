"""What a caller may ask for, in canonical form: the precision, the device and the other arguments.

Every public function takes its arguments through here first. Wrong types are a ``TypeError``;
values of the right type that name nothing are a :class:`~mixprec.PrecisionError` subclass that
lists what would have been valid. Subclasses of ``str`` and ``int`` are taken as the plain value
they hold, so that neither an ``IntEnum`` nor a subclass with its own ``__eq__``/``__hash__``
can change what a name means or which cached answer it finds.

The names known here are the standard precisions (:data:`~mixprec.STANDARD_CONTRACTS`), those
installed backends offer, Lightning's aliases and "auto"; the device types torch knows and those
installed backends serve; and, for error messages, the distribution that serves a device type or
a precision (``pip install mixprec-cuda``, ``pip install mixprec-fp8``).
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

from mixprec._backend import ALIASES, ANY_DEVICE, TARGETS, Device
from mixprec._contract import STANDARD_CONTRACTS
from mixprec._errors import DeviceError, PrecisionError, UnknownPrecisionError
from mixprec._registry import Snapshot

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "PRECISION_DISTRIBUTIONS",
    "STANDARD_PRECISIONS",
    "TARGETS",
    "TORCH_DEVICE_TYPES",
    "arguments",
    "canonical_precision",
    "check_target",
    "known_device_types",
    "known_precisions",
    "requested_device",
]

#: The precisions every user may ask for, whether or not a backend serving them is installed.
STANDARD_PRECISIONS = tuple(STANDARD_CONTRACTS)
#: Device types with a known backend distribution, for "pip install ..." hints.
KNOWN_DISTRIBUTIONS = {"cpu": "mixprec-cpu", "cuda": "mixprec-cuda", "mps": "mixprec-mps"}
#: Precisions served by a distribution of their own on any device type, for "pip install ..." hints.
PRECISION_DISTRIBUTIONS = {"fp8-mixed": "mixprec-fp8"}
#: Device types torch knows, accepted even when no backend registers them (the "true" precisions run there).
TORCH_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "xla", "hpu", "mtia", "meta", "privateuseone"})
_ACCELERATOR_DEVICE_TYPES = {"tpu": "xla", "gpu": "cuda"}
_INTEGER_PRECISIONS = {16: "16-mixed", 32: "32-true", 64: "64-true"}
_PLAIN_PRECISION = frozenset({str, int})
_PLAIN_OPTIONAL = frozenset({str, type(None)})


def arguments(
    precision: object, backend: object, target: object, strategy: object
) -> tuple[str | int, str | None, str, str | None]:
    """The arguments as plain ``str``/``int`` values, or a TypeError for one of the wrong type.

    They become cache keys, so they are checked and made exact before anything else uses them.
    """
    if (
        type(precision) in _PLAIN_PRECISION
        and type(backend) in _PLAIN_OPTIONAL
        and type(target) is str
        and type(strategy) in _PLAIN_OPTIONAL
    ):
        return precision, backend, target, strategy  # type: ignore[return-value]  # the warm path: nothing to convert
    if isinstance(precision, bool) or not isinstance(precision, (str, int)):
        raise TypeError(f"precision must be a str or an int such as 'bf16-mixed' or 32, not {type(precision).__name__}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, not {type(backend).__name__}")
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, not {type(target).__name__}")
    if strategy is not None and not isinstance(strategy, str):
        raise TypeError(f"strategy must be a str such as 'fsdp' or None, not {type(strategy).__name__}")
    return (
        str.__str__(precision) if isinstance(precision, str) else int.__int__(precision),
        None if backend is None else str.__str__(backend),
        str.__str__(target),
        None if strategy is None else str.__str__(strategy),
    )


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise PrecisionError(f"Unknown target {target!r}: use 'fabric' (the default) or 'trainer'.")


def known_precisions(snap: Snapshot) -> set[str]:
    return {p for r in snap.backends.values() for p in r.backend.precisions}.union(STANDARD_PRECISIONS)


def canonical_precision(value: str | int, snap: Snapshot) -> str:
    """The canonical precision string for ``value`` (exact ``str`` or ``int``), "auto", or an UnknownPrecisionError."""
    known = known_precisions(snap)
    valid = (
        f"Valid precisions: {', '.join(sorted(known))}, 'auto', and Lightning's aliases"
        f" {', '.join(repr(a) for a in ALIASES)} (and 16, 32, 64)."
    )
    if isinstance(value, int):
        found = _INTEGER_PRECISIONS.get(value)
        if found is not None:
            return found
        shown = repr(value) if value.bit_length() <= 64 else f"(an integer of {value.bit_length()} bits)"
        raise UnknownPrecisionError(f"Unknown precision {shown}: the integer precisions are 16, 32 and 64. {valid}")
    text = ALIASES.get(value, value)
    if text == "auto" or text in known:
        return text
    close = difflib.get_close_matches(text.lower(), [*known, *ALIASES, "auto"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"
    raise UnknownPrecisionError(f"Unknown precision {shown}.{hint} {valid}")


def known_device_types(snap: Snapshot) -> set[str]:
    types = {r.backend.device_type for r in snap.backends.values()} - {ANY_DEVICE}
    return types | TORCH_DEVICE_TYPES | set(KNOWN_DISTRIBUTIONS)


def requested_device(value: object, snap: Snapshot) -> Device | None:
    """The requested device, or None for "pick the best device present". Its presence is checked later."""
    if value is None:
        return None
    if isinstance(value, str):
        value = str.__str__(value)
        if value == "auto":
            return None
        device = Device.parse(value)
    elif type(value).__name__ == "device" and type(value).__module__ == "torch":
        device = Device(value.type, value.index)  # type: ignore[attr-defined]
    else:
        accelerator_type = _accelerator_device_type(value)
        if accelerator_type is None:
            raise TypeError(
                "device must be a str such as 'cuda:1', a torch.device, a Lightning Accelerator or None,"
                f" not {type(value).__name__}"
            )
        device = Device(accelerator_type)
    known = known_device_types(snap)
    if device.type not in known:
        if device.type == "gpu":
            raise DeviceError("'gpu' is not a torch device type: use 'cuda' (NVIDIA, AMD) or 'mps' (Apple).")
        close = difflib.get_close_matches(device.type, sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DeviceError(
            f"Unknown device type {device.type!r} in {str(device)!r}.{hint} Known device types:"
            f" {', '.join(sorted(known))}; a backend for another type registers it through the"
            " 'mixprec.backends' entry point."
        )
    return device


def _accelerator_device_type(value: object) -> str | None:
    """The device type of a Lightning accelerator object, by the name it is registered under."""
    # Only look where Lightning is already imported: whoever holds an accelerator object has imported it.
    for package in ("lightning.fabric", "lightning_fabric"):
        module: Any = sys.modules.get(f"{package}.accelerators")
        if module is None or not isinstance(value, module.Accelerator):
            continue
        registries = [module.ACCELERATOR_REGISTRY]
        trainer: Any = sys.modules.get(package.replace("fabric", "pytorch") + ".accelerators")
        if trainer is not None:
            registries.append(trainer.AcceleratorRegistry)
        for exact in (True, False):
            for reg in registries:
                for name, entry in reg.items():
                    cls = entry["accelerator"]
                    if (type(value) is cls) if exact else isinstance(value, cls):
                        return str(_ACCELERATOR_DEVICE_TYPES.get(name, name))
        raise DeviceError(
            f"{type(value).__name__} is a Lightning accelerator that is not in Lightning's accelerator"
            " registry, so its device type is unknown: pass the device as a string such as 'cuda'."
        )
    return None
