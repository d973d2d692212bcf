"""Device policy for CUDA GPUs: what each GPU computes natively, asked per device index, without initialising CUDA.

- "bf16-mixed" only where the GPU computes bfloat16 natively: compute capability 8.0 (Ampere) or
  newer, the rule of ``torch.cuda.is_bf16_supported(including_emulation=False)``, applied to the
  requested device rather than the current one. Older GPUs emulate bfloat16 and are refused, with
  the precision to use instead.
- "16-mixed" with ``torch.amp.GradScaler("cuda")`` everywhere; below compute capability 7.0 the GPU
  has no tensor cores, so it is reported "slow" and "auto" answers "32-true" there.
- "bf16-true" and "16-true" by the same rules for their dtype, above the core's priority, so that
  their status on a GPU says whether it computes the dtype (the core's fallback cannot know).

Reading the GPUs never initialises CUDA in this process, so that it can still fork afterwards
(``Fabric(strategy="ddp_fork")``, ``"ddp_notebook"``, Jupyter), where a forked child cannot use a
CUDA its parent started:

- Before CUDA starts, NVML (the NVIDIA driver's management library, through ``nvidia-ml-py``)
  gives each GPU's name and compute capability, as torch's own ``device_count()`` counts through
  it. ``CUDA_VISIBLE_DEVICES`` is applied by torch's rules (see ``_visible``), so ``cuda:N`` here
  is torch's ``cuda:N``, and the current device is ``cuda:0``, as it is when CUDA starts.
- NVML lists GPUs in PCI bus order; CUDA numbers them fastest first unless
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. Where the GPUs differ (name or compute capability) and that
  order is not set, and they are not named by UUID in ``CUDA_VISIBLE_DEVICES``, which one is
  ``cuda:N`` cannot be known before CUDA starts: each is "unavailable" saying how to fix it,
  never a guess.
- A GPU in MIG mode is used through one of its MIG instances: CUDA shows a process a single MIG
  instance (NVIDIA's MIG user guide), the one named by a ``MIG-`` UUID in ``CUDA_VISIBLE_DEVICES``
  or else the first one there is; it computes what its GPU computes.
- Once CUDA is initialised (``torch.cuda.is_initialized()``), torch is asked: it knows exactly,
  and asking it starts nothing more.
- Where NVML cannot be read (no NVIDIA driver, a container without the driver's utility
  libraries, nvidia-ml-py missing, a driver fault), every precision is "unavailable" with the
  reason and what to do, and :func:`device_count` is 0: mixprec-cuda says it cannot tell rather
  than initialise CUDA or guess.

ROCm builds of torch also use the device type "cuda", and have no NVML. torch takes every ROCm GPU
to compute bfloat16 natively (``is_bf16_supported()`` is True there without looking at the GPU),
and every GPU ROCm supports computes float16 natively, so all four precisions are "available" on
each ROCm GPU, which needs only the count. torch counts ROCm GPUs without starting HIP through AMD
SMI's Python module (``amdsmi``), which torch imports where it is installed; without it, torch's
count starts HIP, so mixprec-cuda reports the GPUs unavailable, saying to install it. A ROCm GPU
has no CUDA compute capability (``GPU.capability`` is None); its gfx architecture is known once HIP
is initialised.

:func:`decide` is a pure function of a :class:`CUDAProbe`; it is what the tests exercise for GPUs
this machine does not have. :func:`probe` is public for other backends that need to know the GPU
without initialising CUDA (mixprec-fp8 asks for compute capability 8.9)::

    found = probe()
    reason = found.unavailable_reason(device.index)  # None, or why cuda:N cannot be used or judged
    if reason is not None:
        return Availability.unavailable(reason)
    gpu = found.gpu(device.index)  # device.index None means the current device
    if found.cuda_version is not None and gpu.capability is not None and gpu.capability >= (8, 9): ...
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mixprec import Availability, BackendUnavailableError, Device, Request
from mixprec_cuda import _nvml
from mixprec_cuda._visible import visible

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision
    from torch.cuda import _CudaDeviceProperties

__all__ = ["GPU", "CUDAProbe", "availability", "create", "decide", "device_count", "probe"]

#: Compute capability from which a GPU computes bfloat16 natively (Ampere).
NATIVE_BF16 = (8, 0)
#: Compute capability from which a GPU has tensor cores for float16 (Volta).
TENSOR_CORES = (7, 0)
#: The precisions offered, with the dtype each computes in and whether it is "mixed" or "true".
OFFERED = {
    "bf16-mixed": ("bfloat16", "mixed"),
    "16-mixed": ("float16", "mixed"),
    "bf16-true": ("bfloat16", "true"),
    "16-true": ("float16", "true"),
}


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


def probe() -> CUDAProbe:
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
            " this process never forks, initialising it first (torch.cuda.init()) lets mixprec-cuda ask torch instead",
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


# --- decisions ----------------------------------------------------------------------------------


def decide(precision: str, device: Device, cuda: CUDAProbe) -> Availability:
    """The availability of ``precision`` on ``device``, given what ``cuda`` found."""
    if precision not in OFFERED:
        return Availability.unavailable(f"mixprec-cuda does not offer {precision!r}")
    reason = cuda.unavailable_reason(device.index)
    if reason is not None:
        return Availability.unavailable(reason)
    index = cuda.ordinal(device.index)
    gpu = cuda.devices[index]
    dtype, kind = OFFERED[precision]
    named = f"CUDA device {index}" if gpu.name is None else f"CUDA device {index} ({gpu.name})"
    if cuda.hip_version is not None:
        seen = "" if gpu.arch is None else f" ({gpu.arch})"
        why = "torch takes every ROCm GPU to" if dtype == "bfloat16" else "every GPU ROCm supports does"
        return Availability.available(f"{named} is a ROCm GPU{seen}: {why} compute {dtype} natively")
    if gpu.capability is None:
        return Availability.unavailable(f"the compute capability of {named} is not known: it cannot be judged")
    if dtype == "bfloat16":
        return _bf16(index, named, gpu.capability, kind)
    return _fp16(named, gpu.capability, kind)


def _bf16(index: int, named: str, capability: tuple[int, int], kind: str) -> Availability:
    arch = f"sm_{capability[0]}{capability[1]}"
    if capability >= NATIVE_BF16:
        return Availability.available(f"{named} is {arch} and computes bfloat16 natively")
    if capability >= TENSOR_CORES:
        return Availability.unavailable(f"CUDA device {index} is {arch} and has no bfloat16; use '16-{kind}'")
    return Availability.unavailable(
        f"CUDA device {index} is {arch} and has no bfloat16; use '32-true' (it has no tensor cores for float16 either)"
    )


def _fp16(named: str, capability: tuple[int, int], kind: str) -> Availability:
    arch = f"sm_{capability[0]}{capability[1]}"
    if capability >= TENSOR_CORES:
        return Availability.available(f"{named} is {arch} and has float16 tensor cores")
    cost = (
        "float16 autocast is no faster than fp32 and adds loss scaling"
        if kind == "mixed"
        else "float16 is no faster than fp32 and loses precision"
    )
    return Availability.slow(f"{named} is {arch} and has no tensor cores, so {cost}")


# --- the policy module's interface --------------------------------------------------------------


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, probe())


def device_count() -> int:
    """The CUDA devices this process can use, counted without initialising CUDA; 0 where they cannot be read."""
    found = probe()
    return 0 if found.runtime is None or found.error is not None else len(found.devices)


def create(request: Request) -> Precision:
    from mixprec.precision import standard_precision

    # Building a CUDA GradScaler starts no CUDA driver: mixprec.precision imports lightning.fabric, which
    # makes torch count GPUs through NVML, before it builds one.
    return standard_precision(request)
