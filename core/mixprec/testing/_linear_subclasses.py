"""The check that convert_module handles a subclass of nn.Linear as an nn.Linear, keeping its own forward.

Models define their own linear layers (a LoRA adapter, a layer that scales its output, a marker
class for weight decay): ``class MyLinear(nn.Linear)``. ``convert_module`` must give such a layer
the precision's parameter dtype as it gives an ``nn.Linear``, and must not lose its ``forward``: a
conversion that replaces every ``isinstance(module, nn.Linear)`` with its own layer
(``torchao``'s ``convert_to_float8_training`` without a filter does) silently computes
``nn.Linear``'s output in its place. A precision that converts modules may replace the subclass by
a layer of its own only if that layer computes the subclass's forward; mixprec-fp8 leaves
subclasses out of the conversion, computing in bfloat16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixprec._contract import Contract
from mixprec.testing._base import CheckSkipped, Subject, _require, check
from mixprec.testing._conversion import _unit

__all__ = ["linear_subclasses_converted"]

#: How far the subclass's output may be from twice the plain layer's, relative to it: losing the subclass's
#: forward gives 0.5; rounding the plain layer's matmul to float8 (where only it is converted) gives under 0.1.
_LOST = 0.25


class Doubled(nn.Linear):
    """A subclass of nn.Linear with a forward of its own: twice nn.Linear's output."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * super().forward(input)


@check()
def linear_subclasses_converted(subject: Subject, contract: Contract) -> None:
    """convert_module gives an nn.Linear subclass's parameters the dtype it gives an nn.Linear's, and inside
    forward_context it computes in the nn.Linear's dtype what its own forward computes (twice nn.Linear's output,
    for the suite's subclass)."""
    p = subject.make()
    size = _unit(contract)
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(size, size, generator=generator) / size**0.5, torch.randn(size, generator=generator)
    x = torch.randn(2 * size, size, generator=generator).to(subject.torch_device)
    layers = []
    for cls in (Doubled, nn.Linear):
        layer = cls(size, size)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        layers.append(p.convert_module(nn.Sequential(layer).to(subject.torch_device)))
    mine, plain = layers
    dtypes = [sorted({str(param.dtype) for param in model.parameters()}) for model in layers]
    _require(
        dtypes[0] == dtypes[1],
        f"after convert_module the parameters of a subclass of nn.Linear are {', '.join(dtypes[0])}; an nn.Linear's are"
        f" {', '.join(dtypes[1])}, and so must a subclass's be: convert every module's parameters (module.to(dtype)),"
        " not only the classes torch ships",
    )
    try:
        with torch.no_grad(), p.forward_context():
            reference = plain(p.convert_input(x))
    except RuntimeError as exc:
        raise CheckSkipped(
            f"a converted nn.Linear itself does not compute inside forward_context() ({str(exc).splitlines()[0]}):"
            " forward_dtype says why; there is nothing to compare its subclass with"
        ) from None
    with torch.no_grad(), p.forward_context():
        got = mine(p.convert_input(x))
    _require(
        got.dtype == reference.dtype,
        f"inside forward_context() a subclass of nn.Linear computes in {got.dtype}, an nn.Linear in {reference.dtype}",
    )
    expected = 2 * reference.detach().double()
    error = float(torch.linalg.vector_norm(got.detach().double() - expected) / torch.linalg.vector_norm(expected))
    _require(
        error < _LOST,
        f"after convert_module a subclass of nn.Linear whose forward doubles nn.Linear's output is {error:.2f}"
        " (relative) from twice the plain layer's output; 0.5 is what losing its forward gives: a conversion that"
        " replaces layers must take only the classes it can compute (type(module) is nn.Linear), or compute the"
        " subclass's own forward",
    )
