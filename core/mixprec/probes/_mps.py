"""What torch and the platform say about Apple's Metal GPU (MPS) in this process."""

from __future__ import annotations

import functools
import platform
import re
from dataclasses import dataclass

__all__ = ["MPSProbe", "mps", "release"]

_RELEASE = re.compile(r"(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class MPSProbe:
    """What torch and the platform say about MPS in this process."""

    #: (major, minor) of the installed torch.
    torch_version: tuple[int, int]
    #: (major, minor) of macOS; None on any other operating system.
    macos_version: tuple[int, int] | None
    #: ``torch.backends.mps.is_built()``
    built: bool
    #: ``torch.backends.mps.is_available()``
    available: bool


def release(text: str) -> tuple[int, int] | None:
    """The (major, minor) a version string starts with: "2.8.0+cpu" -> (2, 8), "14" -> (14, 0), "" -> None."""
    match = _RELEASE.match(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


@functools.cache
def mps() -> MPSProbe:
    """torch's version, macOS's version and whether torch has a usable MPS device, read once per process.

    ``torch.backends.mps.is_available()`` asks Metal for a device without creating a command queue.
    """
    import torch

    return MPSProbe(
        torch_version=release(torch.__version__) or (0, 0),
        macos_version=release(platform.mac_ver()[0]),
        built=torch.backends.mps.is_built(),
        available=torch.backends.mps.is_available(),
    )
