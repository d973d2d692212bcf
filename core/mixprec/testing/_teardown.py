"""The check of teardown() from another default dtype than float32.

``teardown_restores_state`` runs where the suite runs, with float32 as torch's default dtype; a
teardown that sets float32 back rather than the dtype it found passes it. Scripts that compute in
float64 (``torch.set_default_dtype(torch.float64)``, common in scientific code) or that build under
a half-precision default meet such a teardown after their run: every later tensor changes dtype.
"""

from __future__ import annotations

import torch

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check
from mixprec.testing._global_state import State, changes, snapshot

__all__ = ["teardown_restores_another_default_dtype"]

#: Default dtypes the object is made, set up and torn down under; the case's isolation puts float32 back after.
_DEFAULTS = (torch.float64, torch.float16)


def _torn_down(subject: Subject, default: torch.dtype) -> tuple[State, State]:
    """torch's state before and after an object is made, set up and torn down with ``default`` as the default dtype."""
    torch.set_default_dtype(default)
    before = snapshot(subject.device.type)
    p = subject.make()
    p.convert_module(subject.model())
    p.teardown()
    return before, snapshot(subject.device.type)


@check()
def teardown_restores_another_default_dtype(subject: Subject, contract: Contract) -> None:
    """An object made, set up (convert_module) and torn down under float64 or float16 as torch's default dtype
    leaves that default, and all of torch's global state, as it was (beyond what it leaves changed from float32,
    which teardown_restores_state reports)."""
    before, after = _torn_down(subject, torch.float32)
    known = tuple(name for name in before if before[name] != after[name])
    for default in _DEFAULTS:
        leaked = changes(*_torn_down(subject, default), ignore=known)
        _require(
            not leaked,
            f"with {default} as the default dtype, after get_precision, convert_module and teardown(): {leaked}."
            " teardown() must put back the state it found when the object was made (torch.get_default_dtype() then),"
            " not float32",
        )
