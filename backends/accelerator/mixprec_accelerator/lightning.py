"""Lightning on a device it has no accelerator for (Intel GPUs as "xpu" today, out-of-tree devices).

Lightning ships accelerators for the CPU, CUDA, MPS and XLA only. For any other device type torch
reaches, this module gives Fabric and the Trainer what they need, without patching Lightning:

- an ``Accelerator`` for the device type, one class per type for each of them (Lightning asks the
  class, not the object, whether it is available), registered under the type's name in Lightning's
  registries, so that ``accelerator="xpu"`` names it;
- a ``SingleDeviceStrategy`` on the device (:func:`strategy`): Lightning gives an accelerator it does
  not know a strategy on the CPU unless one is passed, which would leave the model there.

Importing this module registers an accelerator for every device type mixprec-accelerator finds here
(:func:`mixprec_accelerator.policy.device_types`) that Lightning lacks; :func:`register` does it for a
device type that appears later (a PrivateUse1 device renamed after the import). ``import mixprec``
and ``mixprec list`` never import this module.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from lightning.fabric.accelerators import ACCELERATOR_REGISTRY
from lightning.fabric.accelerators.accelerator import Accelerator as FabricAccelerator
from lightning.fabric.strategies.single_device import SingleDeviceStrategy as FabricSingleDeviceStrategy
from lightning.pytorch.accelerators import Accelerator as TrainerAccelerator
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import SingleDeviceStrategy as TrainerSingleDeviceStrategy

from mixprec import DeviceError
from mixprec_accelerator.policy import OWN_BACKENDS, device_types

__all__ = ["DeviceAccelerator", "accelerator_classes", "register", "strategy"]


def _device_module(device_type: str) -> Any:
    module = getattr(torch, device_type, None)
    if not callable(getattr(module, "device_count", None)):
        raise DeviceError(
            f"torch has no device module torch.{device_type} that counts {device_type} devices: install the"
            f" vendor's torch extension for {device_type!r} (or a torch built for it) before using it in Lightning"
        )
    return module


class DeviceAccelerator(FabricAccelerator):
    """Fabric's accelerator for one device type torch reaches; :func:`accelerator_classes` makes one per type."""

    #: The torch device type this accelerator runs on.
    device_type: str = ""

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` the current device of its type, where the device module can."""
        if device.type != self.device_type:
            raise DeviceError(f"Device should be {self.device_type}, got {device} instead.")
        set_device = getattr(_device_module(self.device_type), "set_device", None)
        if callable(set_device) and device.index is not None:
            set_device(device.index)

    def teardown(self) -> None:
        pass

    @classmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        """Device indices from Lightning's ``devices``: a count, a list of indices, "auto" or -1 (all)."""
        count = cls.auto_device_count()
        if devices in ("auto", -1, "-1"):
            return list(range(count))
        if isinstance(devices, str):
            devices = [int(i) for i in devices.split(",") if i.strip()] if "," in devices else int(devices)
        indices = list(range(devices)) if isinstance(devices, int) else [int(i) for i in devices]
        absent = [i for i in indices if not 0 <= i < count]
        if not indices or absent:
            raise DeviceError(
                f"devices={devices!r} asks for {cls.device_type} devices {absent or indices} that are not here:"
                f" torch.{cls.device_type}.device_count() is {count}."
            )
        return indices

    @classmethod
    def get_parallel_devices(cls, devices: Any) -> list[torch.device]:
        """The devices of :meth:`parse_devices`, as torch devices."""
        return [torch.device(cls.device_type, i) for i in cls.parse_devices(devices)]

    @classmethod
    def auto_device_count(cls) -> int:
        """``torch.<type>.device_count()``."""
        return int(_device_module(cls.device_type).device_count())

    @classmethod
    def is_available(cls) -> bool:
        """Whether torch counts at least one device of the type."""
        try:
            return cls.auto_device_count() > 0
        except DeviceError:
            return False

    @classmethod
    def name(cls) -> str:
        return cls.device_type


class DeviceTrainerAccelerator(DeviceAccelerator, TrainerAccelerator):
    """The Trainer's accelerator for one device type torch reaches."""

    def get_device_stats(self, device: Any) -> dict[str, Any]:
        """The device module's ``memory_stats(device)`` where it has one; nothing otherwise."""
        stats = getattr(_device_module(self.device_type), "memory_stats", None)
        return dict(stats(device)) if callable(stats) else {}


@functools.cache
def accelerator_classes(device_type: str) -> tuple[type[DeviceAccelerator], type[DeviceTrainerAccelerator]]:
    """Fabric's and the Trainer's accelerator classes for ``device_type``, made once per type."""
    if device_type in (*OWN_BACKENDS, "meta") or not device_type.isidentifier():
        raise DeviceError(
            f"{device_type!r} is not a device type mixprec-accelerator gives Lightning an accelerator for:"
            " Lightning has its own for 'cpu', 'cuda' and 'mps'."
        )
    title = device_type.title().replace("_", "")
    fabric = type(f"{title}Accelerator", (DeviceAccelerator,), {"device_type": device_type})
    trainer = type(f"{title}Accelerator", (DeviceTrainerAccelerator,), {"device_type": device_type})
    return fabric, trainer


def register(device_type: str | None = None) -> tuple[str, ...]:
    """Register accelerators for ``device_type`` (None: every type found here) where Lightning has none.

    Returns the device types registered by this call. A type Lightning already has an accelerator
    for (its own, or one registered before) is left as it is.
    """
    wanted = device_types() if device_type is None else (device_type,)
    registered = []
    for kind in wanted:
        fabric, trainer = accelerator_classes(kind)
        description = f"mixprec-accelerator's accelerator for {kind!r} devices"
        added = False
        if kind not in ACCELERATOR_REGISTRY:
            ACCELERATOR_REGISTRY.register(kind, fabric, description=description)
            added = True
        if kind not in AcceleratorRegistry:
            AcceleratorRegistry.register(kind, trainer, description=description)
            added = True
        if added:
            registered.append(kind)
    return tuple(registered)


def strategy(device: str | torch.device, target: Literal["fabric", "trainer"] = "fabric") -> Any:
    """A ``SingleDeviceStrategy`` on ``device`` with its accelerator, for Fabric or (``target="trainer"``) the Trainer.

    Pass it as ``strategy=``: Lightning puts a device it has no accelerator for on the CPU otherwise.
    ``"xpu"`` means ``xpu:0``.
    """
    where = torch.device(device)
    where = torch.device(where.type, 0 if where.index is None else where.index)
    register(where.type)
    fabric, trainer = accelerator_classes(where.type)
    if target == "fabric":
        return FabricSingleDeviceStrategy(device=where, accelerator=fabric())
    if target == "trainer":
        return TrainerSingleDeviceStrategy(device=where, accelerator=trainer())
    raise DeviceError(f"Unknown target {target!r}: use 'fabric' (the default) or 'trainer'.")


register()
