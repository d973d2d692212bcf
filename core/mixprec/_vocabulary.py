"""The words of mixprec's contracts, in one table: precision names, dtypes, capabilities, GradScaler options.

Everything else derives from here: the standard contracts (``_contract.py``), the precisions
users may always ask for (``_inputs.py``), the dtypes ``mixprec.precision`` builds with, the
GradScaler options it takes (``_scaler.py``), and the capability names a backend or a contract may
declare unsupported, which are checked when a ``Backend`` or a ``Contract`` is built, so that a
misspelt name fails the plugin as it loads rather than the conformance suite when it runs.

Imports nothing (no torch): dtypes are torch's attribute names (``getattr(torch, "bfloat16")``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "CAPABILITIES",
    "DTYPES",
    "MIXED_PRECISIONS",
    "SCALER_OPTIONS",
    "STANDARD_PRECISIONS",
    "TRUE_PRECISIONS",
    "unknown_capabilities",
]

#: The dtype names a contract may use, as torch names them.
DTYPES = ("float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")

#: The standard mixed precisions, each with the dtype it autocasts to.
MIXED_PRECISIONS: Mapping[str, str] = MappingProxyType({"16-mixed": "float16", "bf16-mixed": "bfloat16"})
#: The standard "true" precisions (no autocast, no scaler), each with the dtype everything is in.
TRUE_PRECISIONS: Mapping[str, str] = MappingProxyType(
    {"16-true": "float16", "bf16-true": "bfloat16", "32-true": "float32", "64-true": "float64"}
)
#: Every precision whose contract the core fixes: users may always ask for these by name.
STANDARD_PRECISIONS = (*MIXED_PRECISIONS, *TRUE_PRECISIONS, "fp8-mixed")

#: The options ``get_precision`` passes to ``torch.amp.GradScaler`` for a precision with a scaler.
SCALER_OPTIONS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")

#: Optional capabilities, by the name a backend lists in ``Backend.unsupported`` (for all its
#: precisions) or a contract in ``Contract.unsupported`` (for one), with what each promises. A
#: capability neither lists is required: the conformance suite checks it and it must pass.
CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "fused_optimizers": (
            "optimizer_step() with a fused optimizer (torch.optim.SGD(fused=True)) steps like the unfused one"
            " and, with a GradScaler, skips a step with non-finite gradients; unscale_gradients() unscales its"
            " gradients for clipping with a GradScaler, so that the step after clipping is bit for bit the unfused"
            " one's, and changes nothing without one (checked for precisions with float32 or float64 parameters)"
        ),
        "lbfgs_closure": (
            "optimizer_step(optimizer, closure=...) runs the closure, so LBFGS trains (precisions without a"
            " GradScaler; with one, LBFGS is refused, as in Lightning)"
        ),
    }
)


def unknown_capabilities(names: Mapping[str, str]) -> str | None:
    """What is wrong with the capability names of ``names``, naming the known ones; None when all are known."""
    unknown = sorted(set(names) - set(CAPABILITIES))
    if not unknown:
        return None
    return f"unknown capabilities {unknown}; the capabilities are {sorted(CAPABILITIES)}"
