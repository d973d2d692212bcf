"""The CUDA GPUs this process can use, read without initialising CUDA.

A forked child cannot use CUDA its parent started, so nothing here starts it:

- Before CUDA starts, NVML (the NVIDIA driver's management library, through ``nvidia-ml-py``,
  the core's extra ``mixprec[cuda]``) gives each GPU's name, compute capability and UUID, as
  torch's own ``device_count()`` counts through it. ``CUDA_VISIBLE_DEVICES`` is applied by torch's
  rules (see ``_visible``), so ``cuda:N`` here is torch's ``cuda:N``, and the current device is
  ``cuda:0``, as it is when CUDA starts.
- NVML lists GPUs in PCI bus order; CUDA numbers them fastest first unless
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. Where the GPUs differ and that order is not set, and they are
  not named by UUID, which one is ``cuda:N`` is not known: :attr:`CUDAProbe.unordered` says how to
  fix it, never a guess.
- A GPU in MIG mode is used through one MIG instance, the one named by a ``MIG-`` UUID in
  ``CUDA_VISIBLE_DEVICES`` or else the first one there is; it computes what its GPU computes.
- Once CUDA is initialised (``torch.cuda.is_initialized()``), torch is asked: it knows exactly.
- ROCm builds (device type "cuda" too) have no NVML: torch counts their GPUs without starting HIP
  only where AMD SMI's ``amdsmi`` module is installed; without it :attr:`CUDAProbe.error` says so.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mixprec._errors import BackendUnavailableError
from mixprec.probes import _nvml
from mixprec.probes._visible import visible

if TYPE_CHECKING:
    from torch.cuda import _CudaDeviceProperties

__all__ = ["GPU", "CUDAProbe", "cuda"]


@dataclass(frozen=True)
class GPU:
    """One GPU (or MIG instance) as this process's CUDA numbers it."""

    #: The product name ("NVIDIA H100 80GB HBM3"); None where it is not known (ROCm before HIP starts).
    name: str | None
    #: The CUDA compute capability, e.g. (9, 0); None on ROCm.
    capability: tuple[int, int] | None
    #: A ROCm GPU's gfx architecture ("gfx90a"), known once HIP is initialised; None elsewhere.
    gfx: str | None = None
    #: The driver's UUID ("GPU-…", "MIG-…"), where NVML gave it.
    uuid: str | None = None

    @property
    def arch(self) -> str | None:
        """The architecture: "sm_90" for a CUDA GPU, the gfx name of a ROCm GPU; None where not known."""
        if self.capability is not None:
            return f"sm_{self.capability[0]}{self.capability[1]}"
        return self.gfx


@dataclass(frozen=True)
class CUDAProbe:
    """What this process can know about its CUDA GPUs without initialising CUDA."""

    torch_version: str
    #: ``torch.version.cuda``: None when torch was built without CUDA.
    cuda_version: str | None
    #: ``torch.version.hip``: set on ROCm builds, where ``cuda_version`` is None.
    hip_version: str | None = None
    #: The visible GPUs, ``cuda:0`` first.
    devices: tuple[GPU, ...] = ()
    #: The index that "cuda" without one means: torch's current device once CUDA runs, else 0.
    current_device: int = 0
    #: Why the GPUs could not be read (NVML missing, a driver fault), with what to do; ``devices`` is then empty.
    error: str | None = None
    #: Why it is not known which of ``devices`` is which ``cuda:N`` (they are then in the driver's order).
    unordered: str | None = None
    #: The value of ``CUDA_VISIBLE_DEVICES`` that was applied; None where it is unset or not read.
    visible_devices: str | None = None

    @property
    def runtime(self) -> str | None:
        """The GPU runtime torch was built with, e.g. "CUDA 12.4"; None when it was built with neither."""
        if self.cuda_version is not None:
            return f"CUDA {self.cuda_version}"
        if self.hip_version is not None:
            return f"ROCm {self.hip_version}"
        return None

    @property
    def device_count(self) -> int:
        """The CUDA devices this process can use: 0 where torch has no GPU runtime or the GPUs cannot be read."""
        return 0 if self.runtime is None or self.error is not None else len(self.devices)

    def ordinal(self, index: int | None = None) -> int:
        """The device index that ``cuda:<index>`` means; ``index`` None is the current device."""
        return self.current_device if index is None else index

    def unavailable_reason(self, index: int | None = None) -> str | None:
        """Why ``cuda:<index>`` cannot be used or judged here, saying what to do; None where :meth:`gpu` answers."""
        if self.runtime is None:
            return (
                f"torch {self.torch_version} was built without CUDA: install a CUDA build of torch"
                " (https://pytorch.org/get-started/locally/)"
            )
        if self.error is not None:
            return self.error
        count = len(self.devices)
        if count == 0:
            rocm = self.hip_version is not None
            tool, variable = ("rocm-smi", "HIP_VISIBLE_DEVICES") if rocm else ("nvidia-smi", "CUDA_VISIBLE_DEVICES")
            shown = "" if self.visible_devices is None else f" (it is {self.visible_devices!r})"
            return (
                f"torch {self.torch_version} (built with {self.runtime}) sees no CUDA device: check that the GPU"
                f" driver works ({tool}) and that {variable} does not hide every GPU{shown}"
            )
        ordinal = self.ordinal(index)
        if ordinal >= count:
            valid = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            plural = "device" if count == 1 else "devices"
            return f"cuda:{ordinal} does not exist: {count} CUDA {plural} ({valid})"
        return self.unordered

    def gpu(self, index: int | None = None) -> GPU:
        """The GPU that is ``cuda:<index>``; raises BackendUnavailableError with :meth:`unavailable_reason`."""
        reason = self.unavailable_reason(index)
        if reason is not None:
            raise BackendUnavailableError(reason)
        return self.devices[self.ordinal(index)]


def cuda() -> CUDAProbe:
    """What this process knows about its CUDA GPUs now, read without initialising CUDA.

    NVML is read once per process; ``CUDA_VISIBLE_DEVICES`` and whether CUDA has started are read
    at each call, as torch reads them until CUDA starts.
    """
    import torch

    found = CUDAProbe(torch.__version__, torch.version.cuda, torch.version.hip)
    if found.runtime is None:
        return found
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return _from_torch(found)
    if found.hip_version is not None:
        return _rocm(found)
    return _from_nvml(found)


def _from_torch(found: CUDAProbe) -> CUDAProbe:
    import torch

    rocm = found.hip_version is not None
    try:
        count = torch.cuda.device_count()
        devices = tuple(_torch_gpu(torch.cuda.get_device_properties(i), rocm=rocm) for i in range(count))
        return replace(found, devices=devices, current_device=torch.cuda.current_device())
    except RuntimeError as exc:
        # GPUs that are busy, lost or reset fail here rather than when CUDA started.
        return replace(found, error=f"CUDA cannot read the GPUs: {exc}")


def _torch_gpu(props: _CudaDeviceProperties, *, rocm: bool) -> GPU:
    if rocm:
        return GPU(props.name, None, gfx=props.gcnArchName.split(":")[0])
    return GPU(props.name, (props.major, props.minor))


def _rocm(found: CUDAProbe) -> CUDAProbe:
    import torch

    # torch imports amdsmi on ROCm builds where it is installed; without it torch counts by starting HIP.
    if "amdsmi" not in sys.modules:
        return replace(
            found,
            error="AMD SMI's Python module (amdsmi) is not installed, and without it torch counts ROCm GPUs by"
            " starting HIP in this process: install it from your ROCm (pip install /opt/rocm/share/amd_smi); where"
            " this process never forks, initialising it first (torch.cuda.init()) lets mixprec ask torch instead",
        )
    try:
        count = torch.cuda.device_count()
    except RuntimeError as exc:  # HIP_VISIBLE_DEVICES and ROCR_VISIBLE_DEVICES that disagree
        return replace(found, error=f"torch cannot count the ROCm GPUs: {exc}")
    return replace(found, devices=tuple(GPU(None, None) for _ in range(count)))


def _from_nvml(found: CUDAProbe) -> CUDAProbe:
    physical = _nvml.inventory()
    if isinstance(physical, str):
        return replace(found, error=physical)
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    instances = [(gpu, mig) for gpu in physical for mig in gpu.mig or ()]
    shown = visible(value, [gpu.uuid for gpu in physical], [mig.uuid for _, mig in instances])
    found = replace(found, visible_devices=value)
    if shown.kind == "mig":
        # CUDA shows a process one MIG instance, the first one named.
        return replace(found, devices=tuple(_mig_gpu(*instances[i]) for i in shown.ordinals[:1]))
    devices, mig_taken = [], False
    for gpu in (physical[i] for i in shown.ordinals):
        if gpu.mig is None:
            devices.append(GPU(gpu.name, gpu.capability, uuid=gpu.uuid))
        elif gpu.mig and not mig_taken:
            devices.append(_mig_gpu(gpu, gpu.mig[0]))
            mig_taken = True
    return replace(found, devices=tuple(devices), unordered=_unordered(physical, shown.kind))


def _mig_gpu(gpu: _nvml.PhysicalGPU, instance: _nvml.MIGInstance) -> GPU:
    return GPU(instance.name, gpu.capability, uuid=instance.uuid)


def _unordered(physical: tuple[_nvml.PhysicalGPU, ...], kind: str) -> str | None:
    """Why CUDA's numbering of these GPUs is unknown before CUDA starts; None where it is known."""
    kinds = sorted({(gpu.name, gpu.capability) for gpu in physical})
    if kind == "uuid" or len(kinds) < 2 or os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return None
    differ = ", ".join(f"{name} (sm_{major}{minor})" for name, (major, minor) in kinds)
    return (
        f"the GPUs here differ ({differ}) and CUDA numbers them fastest first, so which one is which cuda:N is not"
        " known without initialising CUDA: set CUDA_DEVICE_ORDER=PCI_BUS_ID (nvidia-smi's numbering) or name the"
        " GPUs by UUID in CUDA_VISIBLE_DEVICES (nvidia-smi -L)"
    )
