"""How far a step's weights may land from the exact step: one unit in the last place of the parameters' dtype.

An SGD step computes ``w - lr * g`` and rounds it to the parameters' dtype. Rounding to nearest
lands within half a unit in the last place (ulp) of the exact result, stochastic rounding within
one: it rounds to one of the two neighbours of the exact value, up or down at random, so the error
of one weight is below one ulp whatever the seed, and zero on average. So the bound the step checks
hold a weight to is deterministic, never a matter of luck: one ulp of the exact result in the
parameters' dtype, plus the rounding of ``lr * g`` itself (``eps * |lr * g|``). A backend that
rounds faithfully, to nearest or stochastically, passes with any seed; a step with the wrong
learning rate, in the wrong parameter group or scaled wrongly moves some weight by more than one
ulp (the suite's steps span several ulps of bfloat16), and fails.

The exact result is computed in float64 from the weights and the true gradients as they are in the
parameters' dtype, so the bound measures the step alone. When a step misses it, the message says
what was measured: the largest deviation in ulps, and how large each parameter group's step was
against the exact one (a ratio of 0.5 or 2 is a wrong learning rate, 1024 an unscaled gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["apart_in_roundings", "exact_step", "require_step", "ulp"]


def ulp(values: Tensor, dtype: torch.dtype) -> Tensor:
    """The spacing of ``dtype``'s numbers at each of ``values`` (float64): the gap a rounding to ``dtype`` can span."""
    info = torch.finfo(dtype)
    magnitude = values.abs().clamp_min(info.smallest_normal)
    return torch.exp2(torch.floor(torch.log2(magnitude))) * info.eps


def exact_step(weights: Sequence[Tensor], gradients: Sequence[Tensor], lrs: Sequence[float]) -> list[Tensor]:
    """``w - lr * g`` for each weight, in float64: the step SGD takes before rounding to the parameters' dtype."""
    return [w.double() - lr * g.double() for w, g, lr in zip(weights, gradients, lrs, strict=True)]


def require_step(
    before: Sequence[Tensor],
    after: Sequence[Tensor],
    gradients: Sequence[Tensor],
    lrs: Sequence[float],
    groups: Sequence[int],
    what: str,
) -> str | None:
    """Why ``after`` is not ``before`` stepped by SGD with ``gradients`` and learning rates ``lrs``; None if it is.

    Each weight must lie within one ulp of the parameters' dtype of the exact result, plus the rounding of
    the update itself. ``groups`` gives each tensor's parameter group (numbered from 1), for the message,
    which starts with ``what``.
    """
    exact = exact_step(before, gradients, lrs)
    worst, where = 0.0, 0
    for index, (got, want, start) in enumerate(zip(after, exact, before, strict=True)):
        dtype = start.dtype
        allowed = ulp(want, dtype) + torch.finfo(dtype).eps * (want - start.double()).abs()
        deviation = float(((got.double() - want).abs() / allowed).max())
        if deviation > worst:
            worst, where = deviation, index
    if worst <= 1:
        return None
    ratios = "; ".join(f"group {group}: {_ratio(before, after, exact, groups, group)}" for group in sorted(set(groups)))
    dtype = before[where].dtype
    return (
        f"{what}: a weight of parameter tensor {where} is {worst:.3g} times as far from the exact SGD step"
        f" (w - lr * g with the true gradients, computed in float64) as rounding to {dtype} can take it (one unit in"
        f" the last place, whether to nearest or stochastically). Each group's step against the exact one: {ratios}"
        " (1 expected; 0.5 or 2 is a wrong learning rate, the GradScaler's scale an unscaled gradient)"
    )


def _ratio(
    before: Sequence[Tensor], after: Sequence[Tensor], exact: Sequence[Tensor], groups: Sequence[int], group: int
) -> str:
    """How large the step the weights of ``group`` took is against the exact one, by least squares."""
    pairs = [(a, e, b) for a, e, b, g in zip(after, exact, before, groups, strict=True) if g == group]
    taken = torch.cat([(a.double() - b.double()).flatten() for a, _, b in pairs])
    wanted = torch.cat([(e - b.double()).flatten() for _, e, b in pairs])
    norm = float(wanted @ wanted)
    return "no step" if norm == 0 else f"{float(taken @ wanted) / norm:.3g} times"


def apart_in_roundings(before: Sequence[Tensor], a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """How far apart two steps from the weights ``before`` landed, in units of what two faithful roundings allow.

    Each of ``a`` and ``b`` lies within one ulp of the same exact result, so they may lie two ulps apart (plus
    the rounding of the update); 1 or less is a difference rounding explains, more is another step.
    """
    worst = 0.0
    for start, x, y in zip(before, a, b, strict=True):
        allowed = 2 * ulp(y.double(), y.dtype) + torch.finfo(y.dtype).eps * (y.double() - start.double()).abs()
        worst = max(worst, float(((x.double() - y.double()).abs() / allowed).max()))
    return worst
