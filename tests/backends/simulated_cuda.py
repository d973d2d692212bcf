"""A CUDA build of torch with GPUs, simulated on a machine that has neither, to show mixprec never starts CUDA.

What is simulated, and nothing more:

- ``torch.version.cuda`` is "12.4", and ``torch._C._cuda_getDeviceCount`` exists (torch's test that
  it was compiled with CUDA);
- every way into CUDA is a tripwire: ``torch._C._cuda_getDeviceCount`` (``cudaGetDeviceCount``,
  which starts the CUDA driver), ``torch._C._cuda_init`` and ``torch.cuda._lazy_init``. Touching
  one is recorded, with the stack, and raises :class:`CUDAStarted`, a BaseException, so that no
  ``except Exception`` on the way hides it;
- the NVIDIA driver's NVML library, as :class:`FakeNVML`: pynvml's functions, raising pynvml's own
  ``NVMLError`` classes, over a list of :class:`Card`; and torch's two ctypes readers of the same
  library (``torch.cuda._raw_device_count_nvml``, ``_raw_device_uuid_nvml``), so that torch's own
  ``device_count()`` and ``is_available()`` run unchanged over the same GPUs.

The real NVML cannot run here (there is no driver), which is the only reason for the fake. Where
the NVML library is missing, the real pynvml runs, finding no library to load, as it finds none
on this machine.
"""

from __future__ import annotations

import functools
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest
import torch

from mixprec.probes import _nvml

__all__ = ["Card", "CUDAStarted", "FakeNVML", "Simulation", "cards_of", "simulate"]


class CUDAStarted(BaseException):
    """Something would have started CUDA in this process."""


@dataclass(frozen=True)
class Card:
    """One GPU in the simulated machine."""

    name: str
    capability: tuple[int, int]
    uuid: str
    #: Its MIG instances as (name, uuid) where the GPU is in MIG mode; None where it is not.
    mig: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class _Handle:
    card: Card
    #: The MIG instance this handle is for; None for the GPU itself.
    instance: tuple[str, str] | None = None


@dataclass
class FakeNVML:
    """pynvml's functions over ``cards``, as the real library answers them."""

    cards: Sequence[Card]
    #: The NVML_ERROR_* that nvmlInit fails with; None where it succeeds.
    init_error: int | None = None
    started: int = 0

    def _running(self) -> None:
        if not self.started:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.started += 1

    def nvmlShutdown(self) -> None:
        self._running()
        self.started -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._running()
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._running()
        if not 0 <= index < len(self.cards):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(self.cards[index])

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        self._running()
        return handle.card.capability

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._running()
        return handle.card.name if handle.instance is None else handle.instance[0]

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._running()
        return handle.card.uuid if handle.instance is None else handle.instance[1]

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        self._running()
        if handle.card.capability < (8, 0):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_DISABLE if handle.card.mig is None else pynvml.NVML_DEVICE_MIG_ENABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        self._running()
        return 0 if handle.card.mig is None else 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        self._running()
        instances = handle.card.mig or ()
        if index >= len(instances):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.card, instances[index])

    # torch's own readers of libnvidia-ml.so.1, with torch's ways of failing.

    def torch_count(self) -> int:
        if self.init_error == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file: No such file or directory")
        if self.init_error is not None:
            warnings.warn("Can't initialize NVML", stacklevel=2)
            return -1
        return len(self.cards)

    def torch_uuids(self) -> list[str] | None:
        return None if self.torch_count() < 0 else [card.uuid for card in self.cards]


PYNVML_FUNCTIONS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
)


@dataclass
class Simulation:
    """The simulated machine, and what tried to start CUDA in it."""

    nvml: FakeNVML
    #: One entry per touch of a tripwire: its name and the stack that reached it.
    tripped: list[str] = field(default_factory=list)

    def tripwire(self, name: str) -> Callable[..., Any]:
        def tripped(*args: object, **kwargs: object) -> Any:
            self.tripped.append(f"{name}\n{''.join(traceback.format_stack(limit=16))}")
            raise CUDAStarted(f"{name} starts CUDA in this process")

        return tripped


def _no_library(name: str, *args: object, **kwargs: object) -> None:
    raise OSError(f"{name}: cannot open shared object file: No such file or directory")


def simulate(
    patch: pytest.MonkeyPatch, cards: Sequence[Card], *, init_error: int | None = None, nvml: bool = True
) -> Simulation:
    """Make this process a CUDA build of torch, in which CUDA has not started, on a machine with ``cards``.

    Undone with ``patch``. ``nvml=False`` leaves pynvml's functions real, with no NVML library to
    load (as on this machine, and on any machine without the NVIDIA driver); torch finds none either. On a machine where
    this process did start CUDA, torch is made to answer as before it started.
    ``PYTORCH_NVML_BASED_CUDA_CHECK`` is removed (importing lightning.fabric sets it to "1", which
    makes ``torch.cuda.is_available()`` count through NVML rather than start the driver), as in a
    process that has not imported Lightning yet.
    """
    missing = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    sim = Simulation(FakeNVML(cards, init_error=init_error if nvml else missing))
    patch.setattr(torch.cuda, "_initialized", False)
    patch.setattr(torch.cuda, "_cached_device_count", None)
    patch.setattr(torch.version, "cuda", "12.4")
    patch.setattr(torch._C, "_cuda_getDeviceCount", sim.tripwire("torch._C._cuda_getDeviceCount"), raising=False)
    patch.setattr(torch._C, "_cuda_init", sim.tripwire("torch._C._cuda_init"), raising=False)
    patch.setattr(torch.cuda, "_lazy_init", sim.tripwire("torch.cuda._lazy_init"))
    patch.setattr(torch.cuda, "_raw_device_count_nvml", sim.nvml.torch_count)
    patch.setattr(torch.cuda, "_raw_device_uuid_nvml", sim.nvml.torch_uuids)
    patch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    if nvml:
        for name in PYNVML_FUNCTIONS:
            patch.setattr(pynvml, name, getattr(sim.nvml, name))
    else:
        patch.setattr(pynvml, "nvmlLib", None)
        patch.setattr(pynvml, "CDLL", _no_library)
    # mixprec-cuda reads NVML once per process: the simulated machine gets a cache of its own.
    patch.setattr(_nvml, "inventory", functools.cache(_nvml.inventory.__wrapped__))
    return sim


def cards_of(*capabilities: tuple[int, int], name: str = "NVIDIA GPU") -> list[Card]:
    """One GPU per capability, each with its own UUID."""
    return [
        Card(f"{name} sm_{major}{minor}", (major, minor), f"GPU-{index:08x}-1111-2222-3333-444455556666")
        for index, (major, minor) in enumerate(capabilities)
    ]
