"""The strategy families' subjects: which objects the suite builds for them, what they promise, and their process group.

Besides the object for the ordinary strategies (``strategy=None``), a backend builds one object per strategy
family it serves (``Backend.strategy_families``): for ``strategy="fsdp"``, Lightning's ``FSDPPrecision``
(Fabric's and the Trainer's). The suite checks those objects too, in a process group (:func:`process_group`).

This module imports no check: what runs on which subject is decided in :mod:`mixprec.testing._checks_fsdp`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

from mixprec._backend import STRATEGY_FAMILIES, StrategyFamily
from mixprec._errors import PrecisionError

__all__ = ["NONE", "families", "process_group", "unreduced"]

#: The ``strategy`` a run selects for the objects of the ordinary strategies alone (built with ``strategy=None``).
NONE = "none"


def families(strategy: str | None) -> tuple[StrategyFamily | None, ...]:
    """The strategy families a run checks: every one (None for the ordinary strategies first) by default, or the one
    ``strategy`` names ("fsdp", or "none" for the ordinary strategies' objects alone).

    Raises:
        PrecisionError: ``strategy`` is none of those.
    """
    if strategy is None:
        return (None, *STRATEGY_FAMILIES)
    if strategy == NONE:
        return (None,)
    if strategy in STRATEGY_FAMILIES:
        return (strategy,)
    known = ", ".join(repr(f) for f in (*STRATEGY_FAMILIES, NONE))
    raise PrecisionError(
        f"Unknown strategy family {strategy!r}: use one of {known} ({NONE!r} for the objects of the ordinary"
        " strategies), or leave it out for all of them."
    )


@contextmanager
def process_group() -> Iterator[None]:
    """A default process group for the duration: the one that exists (a run under ``torchrun``), or else a new
    one-process "gloo" group (in memory, world size 1), destroyed on exit, so that torch.distributed is left as it was.

    FSDP's ``ShardedGradScaler`` reduces its overflow flag over the group, so an FSDP object cannot step without one.
    """
    if not dist.is_available() or dist.is_initialized():
        yield
        return
    # ShardedGradScaler's process_group defaults to the group.WORLD of the moment torch imports it: imported inside
    # this group, every later scaler would hold this group after it is destroyed.
    import torch.distributed.fsdp.sharded_grad_scaler  # noqa: F401

    store = dist.HashStore()  # type: ignore[attr-defined]  # in memory: nothing listens on a port
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def unreduced(device_type: str) -> str | None:
    """Why the FSDP objects cannot step on ``device_type`` here, or None: no process group can reduce its tensors, so
    a ``ShardedGradScaler`` cannot reduce its overflow flag (nor FSDP its gradients).

    The group that exists (under ``torchrun``) is taken to serve the device; the suite's own is gloo's, which reduces
    CPU and CUDA tensors and those of the device types torch maps to gloo.
    """
    if not dist.is_available():
        return "this torch is built without torch.distributed, which FSDP needs"
    mapped = dist.Backend.default_device_backend_map.get(device_type)
    if dist.is_initialized() or device_type in ("cpu", "cuda") or mapped == "gloo":
        return None
    if mapped is None:
        return (
            f"torch.distributed has no backend for device type {device_type!r}, so FSDP cannot reduce its tensors"
            " there (register one with torch.distributed.Backend.register_backend)"
        )
    return (
        f"the suite's one-process group is gloo's, which does not reduce {device_type!r} tensors: run mixprec check"
        f" under torchrun with a {mapped!r} process group to check the FSDP objects"
    )
