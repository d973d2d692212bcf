"""The check that convert_module converts in place: it returns the module it is given, with the same objects in it.

Fabric's ``setup(model, optimizer)`` and the Trainer make the optimizer before they convert the
model, and users convert a model by hand before giving it to Fabric: a ``convert_module`` that
returns another module (a copy, or a wrapper around the model) or new parameter objects leaves the
optimizer stepping tensors the model no longer uses, and a wrapper changes every checkpoint key.
Converting a converted model again must give it back as it is.
"""

from __future__ import annotations

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check

__all__ = ["convert_module_in_place"]


@check()
def convert_module_in_place(subject: Subject, contract: Contract) -> None:
    """convert_module(module) returns that module with the same parameter objects; converting it again, with the
    same object or a new one, returns it again with the same submodules and parameters, their values unchanged."""
    p = subject.make()
    model = subject.model()
    params = list(model.parameters())
    converted = p.convert_module(model)
    _require(
        converted is model,
        f"convert_module returned a {type(converted).__qualname__}, not the {type(model).__qualname__} it was given:"
        " convert the module in place and return it (module.to(dtype) does), so that the optimizer made before and"
        " the checkpoint keys keep working",
    )
    kept = sum(a is b for a, b in zip(params, model.parameters(), strict=False))
    _require(
        kept == len(params) == len(list(model.parameters())),
        f"convert_module replaced {len(params) - kept} of the module's {len(params)} parameter objects: an optimizer"
        " made before it steps the old ones. Change the parameters in place (module.to(dtype) keeps the objects)",
    )
    modules = list(model.modules())
    values = [param.detach().clone() for param in model.parameters()]
    for second, who in ((p, "the same object"), (subject.make(), "a new object")):
        again = second.convert_module(model)
        _require(
            again is model and list(model.modules()) == modules,
            f"converting the converted module again with {who} returned"
            f" {'another module' if again is not model else 'it with other submodules'}: a module already in the"
            " precision must come back as it is",
        )
        same = all(a is b for a, b in zip(params, model.parameters(), strict=True))
        unchanged = all(v.equal(param.detach()) for v, param in zip(values, model.parameters(), strict=True))
        _require(
            same and unchanged,
            f"converting the converted module again with {who} {'changed' if same else 'replaced'} its parameters:"
            " a module already in the precision must come back as it is",
        )
