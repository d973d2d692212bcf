"""Whether the fake device can be built here: a C++ compiler and ninja, as torch.utils.cpp_extension needs."""

from __future__ import annotations

import shutil

__all__ = ["unbuildable"]


def unbuildable() -> str | None:
    """Why the fake device cannot be built here (no C++ compiler, no ninja), or None when it can."""
    from torch.utils.cpp_extension import is_ninja_available

    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) on PATH to build the fake device"
    if not is_ninja_available():
        return "ninja is not installed (pip install ninja) to build the fake device"
    return None
