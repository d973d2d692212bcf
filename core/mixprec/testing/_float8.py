"""The check of the float8 format: the converted layers' forward uses the float8 dtype the contract names.

float8 comes in two formats: ``float8_e4m3fn`` (3 mantissa bits, range 448), which float8
training uses for weights and activations, and ``float8_e5m2`` (2 mantissa bits, range 57344),
for gradients. Their rounding errors are too close for ``converted_matmul_dtype`` to tell apart on
one matmul, so this check looks at the tensors themselves: every float8 tensor an op of the
converted model's forward takes or returns must be of ``matmul_dtype`` (a ``TorchDispatchMode``
sees the ops inside tensor subclasses such as torchao's too). The backward may use other float8
dtypes (torchao's gradients are ``float8_e5m2``), and is not looked at.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check
from mixprec.testing._conversion import _data, _plain, _unit

__all__ = ["float8_format"]


def _float8(contract: Contract) -> bool:
    return bool(contract.converts_modules) and (contract.matmul_dtype or "").startswith("float8")


class _Dtypes(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode is untyped
    """Records the dtype of every tensor an op takes or returns."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.seen.update(leaf.dtype for leaf in tree_leaves((args, kwargs, out)) if isinstance(leaf, torch.Tensor))
        return out


@check(applies=_float8)
def float8_format(subject: Subject, contract: Contract) -> None:
    """The converted model's forward computes with float8 tensors of matmul_dtype only, of no other float8 dtype.

    Whether it computes in float8 at all is ``converted_matmul_dtype``'s to tell.
    """
    p = subject.make()
    model = p.convert_module(_plain(subject, contract))
    x, _ = _data(_unit(contract), str(subject.device))
    dtypes = _Dtypes()
    with torch.no_grad(), p.forward_context(), dtypes:
        model(p.convert_input(x))
    float8 = sorted(
        str(dtype).removeprefix("torch.") for dtype in dtypes.seen if dtype.itemsize == 1 and dtype.is_floating_point
    )
    others = [name for name in float8 if name != contract.matmul_dtype]
    _require(
        not others,
        f"the converted model's forward computes with the float8 dtypes {', '.join(float8)}; the contract's"
        f" matmul_dtype is {contract.matmul_dtype}: cast the weights and activations to it, and to no other float8"
        " dtype (torchao's Float8LinearConfig: the target_dtype of cast_config_input and cast_config_weight)",
    )
