"""torch's process-wide state that a precision object may change, read as a snapshot and put back.

Context managers and ``teardown()`` promise to restore everything they touch; the checks compare
snapshots taken before and after, and the suite restores one after every check, so that an object
that leaks state fails the check that caught it and no other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AUTOCAST_DEPTH", "State", "changes", "isolated", "snapshot"]

#: The state by part: a readable name and its value.
State = Mapping[str, Any]
#: The part of the state that says how many torch.autocast contexts are open.
AUTOCAST_DEPTH = "open torch.autocast contexts"


def _autocast(device_type: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    def read() -> tuple[bool, torch.dtype]:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)

    def write(value: tuple[bool, torch.dtype]) -> None:
        torch.set_autocast_enabled(device_type, value[0])
        torch.set_autocast_dtype(device_type, value[1])

    return read, write


def _autocast_depth() -> int:
    """How many torch.autocast contexts are open: autocast drops its cached casts only when this returns to 0."""
    depth = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return depth


def _set_autocast_depth(depth: int) -> None:
    while _autocast_depth() > depth:
        torch.autocast_decrement_nesting()
    while _autocast_depth() < depth:
        torch.autocast_increment_nesting()


def _deterministic() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


def _set_grad_enabled(mode: bool) -> None:
    torch.set_grad_enabled(mode)


def _set_default_device(device: torch.device) -> None:
    # None removes the device mode; set_default_device("cpu") would install one that slows every call.
    torch.set_default_device(None if device == torch.device("cpu") else device)


def _attribute(owner: Any, name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    return (lambda: getattr(owner, name)), (lambda value: setattr(owner, name, value))


def _entries(device_type: str) -> dict[str, tuple[Callable[[], Any], Callable[[Any], None] | None]]:
    """Each part of the state by name, with how to read it and how to put it back (None: it cannot be)."""
    entries: dict[str, tuple[Callable[[], Any], Callable[[Any], None] | None]] = {
        "the default dtype": (torch.get_default_dtype, torch.set_default_dtype),
        "grad mode": (torch.is_grad_enabled, _set_grad_enabled),
        "inference mode": (torch.is_inference_mode_enabled, None),
        "autocast's cache": (torch.is_autocast_cache_enabled, torch.set_autocast_cache_enabled),
        AUTOCAST_DEPTH: (_autocast_depth, _set_autocast_depth),
        "the float32 matmul precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
        "deterministic algorithms": (_deterministic, _set_deterministic),
        "the default device": (torch.get_default_device, _set_default_device),
        # Lightning's TransformerEngine precision swaps these inside module_init_context().
        "torch.nn.Linear": _attribute(nn, "Linear"),
        "torch.nn.LayerNorm": _attribute(nn, "LayerNorm"),
        "torch.nn.functional.linear": _attribute(F, "linear"),
    }
    for kind in dict.fromkeys((device_type, "cpu")):
        entries[f"autocast for {kind!r} (enabled, dtype)"] = _autocast(kind)
    return entries


def snapshot(device_type: str) -> State:
    """torch's global state as it is now, for ``device_type`` and the CPU."""
    return {name: read() for name, (read, _) in _entries(device_type).items()}


def changes(before: State, after: State, ignore: tuple[str, ...] = ()) -> str:
    """What differs between two snapshots, but the parts in ``ignore``, readably; empty when nothing does."""
    return "; ".join(
        f"{name} was {_shown(before[name])} and is {_shown(after[name])}"
        for name in before
        if name not in ignore and after[name] != before[name]
    )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
    return str(value)


@contextmanager
def isolated(device_type: str) -> Iterator[None]:
    """Put back torch's global state and drop autocast's cached casts after the body, however it ends."""
    entries = _entries(device_type)
    before = snapshot(device_type)
    try:
        yield
    finally:
        for name, (read, write) in entries.items():
            # Only what changed is written: setting the default device, even to the same one,
            # would install a torch function mode.
            if write is not None and read() != before[name]:
                write(before[name])
        torch.clear_autocast_cache()
