"""The checks of the conversions: convert_input(), convert_output() and convert_module().

convert_input and convert_output take a batch in any nesting of collections and hand back new
collections with floating tensors cast, the caller's left as they were and gradients still
flowing; convert_module gives parameters and floating buffers the contract's parameter dtype and
keeps which parameters train.
"""

from __future__ import annotations

import copy
import functools
import math
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mixprec._contract import Contract
from mixprec.testing._base import FABRIC, Subject, _close, _require, check, compute_dtype
from mixprec.testing._base import parameter_dtype as _parameter_dtype

_Pair = namedtuple("_Pair", ["features", "label"])


@dataclass
class _Batch:
    inputs: Tensor
    lengths: Tensor
    name: str


def _sample(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A nested batch: floating tensors of ``dtype`` and float64, integer and bool tensors, and plain values."""

    def floats(*shape: int) -> Tensor:
        return torch.linspace(-2, 2, math.prod(shape), device=device).reshape(shape).to(dtype)

    ints = torch.arange(6, device=device)
    return {
        "x": floats(2, 3),
        "double": floats(3).double(),
        "ids": ints,
        "mask": ints > 2,
        "nested": [floats(2), (floats(1, 2), ints.int()), _Pair(floats(3), ints)],
        "batch": _Batch(floats(2, 2), ints.clone(), "batch-0"),
        "lr": 0.5,
        "tag": "text",
        "none": None,
    }


def _leaves(original: Any, converted: Any, path: str = "data") -> Iterator[tuple[str, Any, Any]]:
    """Walk two collections side by side, requiring the same structure; yield the leaves' pairs."""
    _require(
        type(converted) is type(original),
        f"{path} came back a {type(converted).__name__}, not a {type(original).__name__} like the input: keep each"
        " collection's type (lightning_utilities' apply_to_collection does)",
    )
    if isinstance(original, dict):
        _require(list(converted) == list(original), f"{path} has keys {list(converted)}, not {list(original)}")
        for key in original:
            yield from _leaves(original[key], converted[key], f"{path}[{key!r}]")
    elif isinstance(original, (list, tuple)):
        _require(len(converted) == len(original), f"{path} has {len(converted)} items, not {len(original)}")
        for i, (a, b) in enumerate(zip(original, converted, strict=True)):
            yield from _leaves(a, b, f"{path}[{i}]")
    elif is_dataclass(original):
        for field in fields(original):
            yield from _leaves(getattr(original, field.name), getattr(converted, field.name), f"{path}.{field.name}")
    else:
        yield path, original, converted


def _check_converted(
    original: Any, converted: Any, float_dtype: Callable[[Tensor], torch.dtype], method: str, rule: str
) -> None:
    for path, before, after in _leaves(original, converted):
        if not isinstance(before, Tensor):
            _require(after == before, f"{method} turned {path} from {before!r} into {after!r}; other values stay")
            continue
        if torch.is_floating_point(before):
            expected = float_dtype(before)
            _require(
                after.dtype == expected,
                f"{method} turned {path} ({before.dtype}) into {after.dtype}; the contract wants {expected}: {rule}",
            )
            _require(after.device == before.device, f"{method} moved {path} from {before.device} to {after.device}")
            _close(
                after.double(),
                before.double().to(expected).double(),
                f"{method} changed the values of {path}; casting to {expected} must be all it does",
            )
        else:
            _require(
                after.dtype == before.dtype,
                f"{method} turned {path} from {before.dtype} into {after.dtype}; integer and bool tensors stay as they"
                " are: cast only floating tensors (torch.is_floating_point)",
            )
            _require(torch.equal(after, before), f"{method} changed the values of {path}; integer tensors stay")


def _record(data: Any, path: str = "data") -> dict[str, Any]:
    """Every object in ``data`` by path, with each collection's keys or length and each tensor's dtype and values."""
    record: dict[str, Any] = {path: data}
    if isinstance(data, Tensor):
        record[f"{path} (values)"] = data.detach().clone()
    elif isinstance(data, dict):
        record[f"{path} (keys)"] = list(data)
        for key, value in data.items():
            record.update(_record(value, f"{path}[{key!r}]"))
    elif isinstance(data, (list, tuple)):
        record[f"{path} (length)"] = len(data)
        for i, item in enumerate(data):
            record.update(_record(item, f"{path}[{i}]"))
    elif is_dataclass(data) and not isinstance(data, type):
        for field in fields(data):
            record.update(_record(getattr(data, field.name), f"{path}.{field.name}"))
    return record


def _mutations(before: dict[str, Any], data: Any) -> list[str]:
    """What changed in the caller's ``data`` since ``before`` was recorded."""
    after = _record(data)
    found = []
    for path, old in before.items():
        if path not in after:
            found.append(f"{path} is gone")
        elif path.endswith(" (values)"):
            new = after[path]
            if new.dtype != old.dtype or not torch.equal(new, old):
                found.append(f"{path.removesuffix(' (values)')} was {old.dtype} and is {new.dtype} with other values")
        elif path.endswith((" (keys)", " (length)")):
            if after[path] != old:
                found.append(f"{path} was {old} and is {after[path]}")
        elif after[path] is not old:
            found.append(f"{path} was replaced by another object")
    return found


def _leaves_caller_data(subject: Subject, method: str, convert: Callable[[Any], Any], dtype: torch.dtype) -> None:
    data = _sample(subject.torch_device, dtype)
    before = _record(data)
    convert(data)
    changed = _mutations(before, data)
    _require(
        not changed,
        f"{method} changed the caller's batch: {'; '.join(changed[:3])}. It must build new collections and new"
        " tensors and leave the ones it was given alone (apply_to_collection does; never assign into them)",
    )


#: A tensor handed over bare and in a collection: how to wrap it, and how to find it in what comes back.
_FORMS: tuple[tuple[str, Callable[[Tensor], Any], Callable[[Any], Any]], ...] = (
    ("a tensor", lambda tensor: tensor, lambda out: out),
    ("a tensor in a dict", lambda tensor: {"t": tensor}, lambda out: out["t"]),
)


def _keeps_graph(method: str, convert: Callable[[Any], Any], template: Tensor) -> None:
    for form, wrap, unwrap in _FORMS:
        leaf = template.detach().clone().requires_grad_()
        converted = unwrap(convert(wrap(leaf)))
        _require(
            isinstance(converted, Tensor) and converted.requires_grad,
            f"{method} of {form} that requires grad returned one that does not: it was detached from the autograd"
            " graph, so no gradient reaches what produced it. Cast with tensor.to(dtype), never .detach() or .data",
        )
        converted.float().sum().backward()
        _require(
            leaf.grad is not None and torch.equal(leaf.grad, torch.ones_like(leaf)),
            f"after {method} of {form}, backward gives it the gradient {leaf.grad!r}, not ones: the cast must stay in"
            " the autograd graph (tensor.to(dtype))",
        )


_INPUT_RULE = "cast every floating tensor to the contract's compute_dtype"
_OUTPUT_RULE = "cast every floating tensor to torch.get_default_dtype(), read at each call"
_UNTOUCHED_RULE = "the contract converts no inputs or outputs (converts_io=False), so leave them as they are"
_MODULE_RULE = (
    "convert_module must cast the module with module.to(dtype) (nothing to do for float32), which casts parameters"
    " and floating buffers and nothing else"
)


@check(targets=FABRIC)
def convert_input(subject: Subject, contract: Contract) -> None:
    """convert_input casts the floating tensors of nested dicts, lists, tuples, namedtuples and dataclasses."""
    p = subject.make()
    data = _sample(subject.torch_device, torch.float32)
    converted = p.convert_input(data)
    if contract.converts_io:
        dtype = compute_dtype(contract)
        _check_converted(data, converted, lambda tensor: dtype, "convert_input", _INPUT_RULE)
    else:
        _check_converted(data, converted, lambda tensor: tensor.dtype, "convert_input", _UNTOUCHED_RULE)


@check(targets=FABRIC)
def convert_input_leaves_caller_data(subject: Subject, contract: Contract) -> None:
    """convert_input leaves the caller's collections and tensors as they were."""
    p = subject.make()
    _leaves_caller_data(subject, "convert_input", p.convert_input, torch.float32)


@check(targets=FABRIC)
def convert_input_keeps_graph(subject: Subject, contract: Contract) -> None:
    """A tensor that requires grad stays in the autograd graph through convert_input."""
    p = subject.make()
    _keeps_graph("convert_input", p.convert_input, torch.linspace(-1, 1, 6, device=subject.torch_device).reshape(2, 3))


@check(targets=FABRIC)
def convert_output(subject: Subject, contract: Contract) -> None:
    """convert_output casts floating tensors back to the default dtype; everything else stays untouched."""
    p = subject.make()
    data = _sample(subject.torch_device, compute_dtype(contract))
    converted = p.convert_output(data)
    if contract.converts_io:
        _check_converted(data, converted, lambda tensor: torch.get_default_dtype(), "convert_output", _OUTPUT_RULE)
    else:
        _check_converted(data, converted, lambda tensor: tensor.dtype, "convert_output", _UNTOUCHED_RULE)


@check(applies=lambda contract: contract.converts_io, targets=FABRIC)
def convert_output_follows_default_dtype(subject: Subject, contract: Contract) -> None:
    """Under a default dtype other than float32 (float64), convert_output casts to it."""
    p = subject.make()
    data = _sample(subject.torch_device, compute_dtype(contract))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        converted = p.convert_output(data)
    finally:
        torch.set_default_dtype(previous)
    _check_converted(
        data, converted, lambda tensor: torch.float64, "convert_output under default dtype float64", _OUTPUT_RULE
    )


@check(targets=FABRIC)
def convert_output_leaves_caller_data(subject: Subject, contract: Contract) -> None:
    """convert_output leaves the caller's collections and tensors as they were."""
    p = subject.make()
    _leaves_caller_data(subject, "convert_output", p.convert_output, compute_dtype(contract))


@check(targets=FABRIC)
def convert_output_keeps_graph(subject: Subject, contract: Contract) -> None:
    """A tensor that requires grad stays in the autograd graph through convert_output, so the loss reaches the model."""
    p = subject.make()
    template = torch.linspace(-1, 1, 6, device=subject.torch_device).reshape(2, 3).to(compute_dtype(contract))
    _keeps_graph("convert_output", p.convert_output, template)


@check()
def parameter_dtype(subject: Subject, contract: Contract) -> None:
    """convert_module, module_init_context and tensor_init_context give parameters of the contract's parameter_dtype."""
    p = subject.make()
    expected = _parameter_dtype(contract)
    model = p.convert_module(subject.model())
    dtypes = {param.dtype for param in model.parameters()}
    _require(
        dtypes == {expected},
        f"after convert_module the parameters are {sorted(map(str, dtypes))}; the contract's parameter_dtype is"
        f" {expected}: {_MODULE_RULE}",
    )
    with p.module_init_context():
        layer = nn.Linear(2, 2)
    _require(
        layer.weight.dtype == expected,
        f"a layer made under module_init_context() is {layer.weight.dtype}, the contract's parameter_dtype {expected}:"
        " it must make parameters in that dtype (set the default dtype inside, as Lightning's HalfPrecision does)",
    )
    with p.tensor_init_context():
        tensor = torch.empty(1)
    _require(
        tensor.dtype == expected,
        f"a tensor made under tensor_init_context() is {tensor.dtype}, the contract's parameter_dtype {expected}",
    )


@functools.cache
def _normalised_template() -> nn.Sequential:
    """A float32 model with BatchNorm, whose running statistics have moved away from their initial values."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1))
        with torch.no_grad():
            model(torch.randn(32, 8))
    return model


@check()
def buffers_converted(subject: Subject, contract: Contract) -> None:
    """convert_module casts floating buffers (BatchNorm's running statistics) like the parameters, not integer ones."""
    p = subject.make()
    expected = _parameter_dtype(contract)
    original = copy.deepcopy(_normalised_template()).to(subject.torch_device)
    before = {name: buffer.clone() for name, buffer in original.named_buffers()}
    model = p.convert_module(original)
    after = dict(model.named_buffers())
    _require(
        sorted(after) == sorted(before),
        f"after convert_module the buffers are {sorted(after)}, not {sorted(before)}; converting keeps every buffer",
    )
    for name, old in before.items():
        new = after[name]
        want = expected if old.is_floating_point() else old.dtype
        _require(
            new.dtype == want,
            f"after convert_module the buffer {name!r} ({old.dtype}) is {new.dtype}; the contract wants {want}"
            f" (floating buffers follow the parameters, integer ones stay): {_MODULE_RULE}",
        )
        _close(new.double(), old.to(want).double(), f"convert_module changed the values of the buffer {name!r}")


@check()
def requires_grad_kept(subject: Subject, contract: Contract) -> None:
    """convert_module keeps which parameters require grad: frozen ones stay frozen, the others train."""
    p = subject.make()
    model = subject.model()
    model[0].weight.requires_grad_(False)
    before = {name: param.requires_grad for name, param in model.named_parameters()}
    after = {name: param.requires_grad for name, param in p.convert_module(model).named_parameters()}
    _require(
        after == before,
        f"before convert_module requires_grad was {before}, after it {after}; converting must keep it"
        " (module.to(dtype) does; a new nn.Parameter requires grad whatever the old one did)",
    )
