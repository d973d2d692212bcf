"""How many devices of a type torch counts, asked without starting the device's runtime."""

from __future__ import annotations

from mixprec._errors import shown

__all__ = ["device_count"]


def device_count(device_type: str) -> int | str:
    """How many ``device_type`` devices torch counts here, or why it cannot count them.

    Only ``torch.<type>.device_count()`` is called: ``torch.cpu`` counts one CPU, ``torch.cuda``
    counts through NVML (it asks the CUDA driver only where NVML cannot be loaded), ``torch.mps``
    and the modules of out-of-tree device types count as their authors wrote them. Nothing is
    cached: a device type's extension may be imported later in the process.
    """
    import torch

    count = getattr(getattr(torch, device_type, None), "device_count", None)
    if not callable(count):
        return f"torch {torch.__version__} has no device module torch.{device_type} that counts {device_type} devices"
    try:
        found = count()
    except Exception as exc:
        return f"torch.{device_type}.device_count() raised {type(exc).__name__}: {exc}"
    if isinstance(found, bool) or not isinstance(found, int) or found < 0:
        return f"torch.{device_type}.device_count() returned {shown(found)}, not a device count"
    return int.__int__(found)
