"""A fake out-of-tree torch device, ``fakedev``: PrivateUse1 over host memory, built at first import.

Importing this module compiles ``fake_device.cpp`` with ``torch.utils.cpp_extension`` (cached
between runs in torch's extensions directory, ``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``),
renames PrivateUse1 to :data:`NAME`, registers the device module ``torch.fakedev`` and registers
mixprec-accelerator's Lightning accelerator for it. PrivateUse1 can be renamed once per process, so
the import is the one way in: ``mixprec check accelerator --device fakedev --import
tests.accelerator.fake_device`` and the tests' session fixture both use it.

Where no C++ compiler or ninja is found, importing it raises :class:`DeviceUnbuildable` saying which.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

__all__ = ["AMP_DTYPES", "COUNT", "NAME", "DeviceUnbuildable"]

#: The device type the fake device is renamed to.
NAME = "fakedev"
#: How many fake devices there are (``fakedev:0`` and ``fakedev:1``).
COUNT = 2
#: The dtypes the device module lists for autocast.
AMP_DTYPES = (torch.bfloat16, torch.float16)

_SOURCE = Path(__file__).with_name("fake_device.cpp")


class DeviceUnbuildable(RuntimeError):
    """The fake device cannot be built here; the message says what is missing."""


def _device_module(extension: types.ModuleType) -> types.ModuleType:
    """The ``torch.fakedev`` module: what torch.autocast, GradScaler and torch.manual_seed ask a device module."""
    module = types.ModuleType(f"torch.{NAME}")
    module.__dict__.update(
        device_count=extension.device_count,
        current_device=extension.current_device,
        set_device=extension.set_device,
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_amp_supported_dtype=lambda: list(AMP_DTYPES),
        manual_seed=lambda seed: None,
        manual_seed_all=lambda seed: None,
        _is_in_bad_fork=lambda: False,
    )
    return module


def _install() -> None:
    if torch._C._get_privateuse1_backend_name() == NAME:
        return
    from tests.accelerator.toolchain import unbuildable

    reason = unbuildable()
    if reason is not None:
        raise DeviceUnbuildable(reason)
    from torch.utils.cpp_extension import load

    extension = load(name="mixprec_fake_device", sources=[str(_SOURCE)], extra_cflags=["-O1"])
    torch.utils.rename_privateuse1_backend(NAME)
    torch._register_device_module(NAME, _device_module(extension))
    torch.utils.generate_methods_for_privateuse1_backend(for_storage=True)

    from mixprec_accelerator.lightning import register

    register(NAME)


_install()
