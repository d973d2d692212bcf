"""The GPUs as the NVIDIA driver's management library (NVML) reports them, read without CUDA.

NVML is the library behind ``nvidia-smi``; it ships with the driver (``libnvidia-ml.so.1``,
``nvml.dll``), and reading it does not start CUDA, so a process may still fork afterwards. torch
counts devices through it for the same reason. It is reached through ``nvidia-ml-py`` (module
``pynvml``), NVIDIA's own ctypes binding, which the core's extra ``mixprec[cuda]`` installs and
which is imported only when the GPUs are first read. NVML lists GPUs in PCI bus order, nvidia-smi's order.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["MIGInstance", "PhysicalGPU", "inventory"]

#: Said where mixprec cannot read the GPUs at all, after what went wrong.
_OR_ASK_TORCH = (
    "; where this process never forks, initialising CUDA first (torch.cuda.init()) lets mixprec ask torch instead"
)


@dataclass(frozen=True)
class MIGInstance:
    """One MIG instance (a slice of a GPU in MIG mode) that this process may use."""

    name: str
    uuid: str


@dataclass(frozen=True)
class PhysicalGPU:
    """One GPU as NVML reports it."""

    name: str
    uuid: str
    capability: tuple[int, int]
    #: The MIG instances this process may use where the GPU is in MIG mode; None where it is not.
    mig: tuple[MIGInstance, ...] | None = None


@functools.cache
def inventory() -> tuple[PhysicalGPU, ...] | str:
    """Every GPU the driver reports, in its order; or why NVML cannot say, and what to do.

    Read once per process: the GPUs in a machine do not change while it runs.
    """
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return (
            "nvidia-ml-py is not installed, and mixprec reads the GPUs through it so as not to initialise"
            f" CUDA in this process: pip install 'mixprec[cuda]' (or nvidia-ml-py){_OR_ASK_TORCH}"
        )
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return _unreadable(pynvml, exc)
    try:
        count = pynvml.nvmlDeviceGetCount()
        return tuple(_gpu(pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count))
    except pynvml.NVMLError as exc:
        return f"NVML could not read the GPUs ({exc}): check that nvidia-smi works"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _unreadable(pynvml: Any, exc: Exception) -> str:
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return (
            "the NVIDIA driver's management library (NVML: libnvidia-ml.so.1, nvml.dll) is not here, so mixprec"
            " cannot read the GPUs without initialising CUDA: install the NVIDIA driver (nvidia-smi must work), and in"
            f" a container expose its utility libraries (NVIDIA_DRIVER_CAPABILITIES=compute,utility){_OR_ASK_TORCH}"
        )
    if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
        return f"the NVIDIA driver is not loaded (NVML: {exc}): check the driver with nvidia-smi"
    if isinstance(exc, pynvml.NVMLError_LibRmVersionMismatch):
        return (
            f"the NVIDIA driver's library and its kernel module are of different versions (NVML: {exc}), as after a"
            " driver upgrade: reboot, or reload the nvidia kernel module"
        )
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return f"this process may not read the GPUs (NVML: {exc}): check the permissions of /dev/nvidia*"
    return f"NVML failed to start ({exc}): check that nvidia-smi works"


def _text(value: str | bytes) -> str:
    # nvidia-ml-py before 11.515 returns bytes for strings.
    return value.decode() if isinstance(value, bytes) else value


def _gpu(pynvml: Any, handle: Any) -> PhysicalGPU:
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    name, uuid = _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle))
    return PhysicalGPU(name, uuid, (major, minor), _mig(pynvml, handle))


def _mig(pynvml: Any, handle: Any) -> tuple[MIGInstance, ...] | None:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
        return None  # a GPU without MIG, or a driver older than MIG
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return None
    instances = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            instance = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except (pynvml.NVMLError_NotFound, pynvml.NVMLError_NoPermission):
            continue  # an empty slot, or an instance given to another container
        name, uuid = _text(pynvml.nvmlDeviceGetName(instance)), _text(pynvml.nvmlDeviceGetUUID(instance))
        instances.append(MIGInstance(name, uuid))
    return tuple(instances)
