"""The module-conversion checks, for every contract whose ``converts_modules`` is not empty ("fp8-mixed").

Such a precision's ``convert_module`` replaces the layers of the listed classes whose weight's
dimensions are multiples of ``Contract.dims_multiple`` with layers of its own, which compute their
matmuls in ``Contract.matmul_dtype``. The checks hold it to what that promises:

- which layers are converted: every eligible layer of a listed class (``converts_eligible_layers``),
  and nothing else: ineligible layers and other modules keep their class and parameters
  (``conversion_leaves_other_layers``);
- the converted layers compute in the matmul dtype (``converted_matmul_dtype``; its docstring says
  what this can and cannot tell);
- the converted model trains within the contract's ``rtol`` of float32 (``converted_training_matches_fp32``);
- a converted model's ``state_dict`` is the plain model's: the same keys, shapes and dtypes, through
  ``torch.save``, into an unconverted model and back (``converted_state_dict_matches_plain``);
- converting twice changes nothing (``conversion_idempotent``);
- ``Fabric.setup`` and the Trainer apply it, and the optimizer trains the converted layers
  (``fabric_setup_converts``, ``trainer_converts``).

They run on a model of their own, the suite's small model being too narrow to convert: linear
layers of widths that are multiples of ``dims_multiple`` (32 and 64 for fp8-mixed), a LayerNorm and
a final ``Linear(32, 1)`` that is not eligible. A listed class the model has no layer of is not
checked (a Conv2d, say), and the checks say so when none of the listed classes is in it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import io
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision import Precision
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import mixprec
from mixprec._contract import Contract
from mixprec._errors import PrecisionWarning
from mixprec.testing._base import (
    FABRIC,
    TRAINER,
    CheckFailed,
    CheckSkipped,
    Subject,
    _close,
    _require,
    check,
    compute_dtype,
    fabric_for,
    parameter_dtype,
    quiet_trainer,
)
from mixprec.testing._contract import torch_dtype

_LR = 0.05
_STEPS = 30


def _converts(contract: Contract) -> bool:
    return bool(contract.converts_modules)


def _converts_matmuls(contract: Contract) -> bool:
    return bool(contract.converts_modules) and contract.matmul_dtype is not None


# --- the conversion model, its data and its float32 training, built once per width and device ---


def _unit(contract: Contract) -> int:
    """The smallest multiple of ``dims_multiple`` from 16 up: every eligible dimension is a multiple of it."""
    multiple = contract.dims_multiple
    return multiple * math.ceil(16 / multiple)


@functools.cache
def _template(unit: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(2 * unit, 4 * unit),
            nn.Tanh(),
            nn.LayerNorm(4 * unit),
            nn.Linear(4 * unit, 2 * unit),
            nn.Tanh(),
            nn.Linear(2 * unit, 1),
        )


@functools.cache
def _data(unit: int, device: str) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * unit, 2 * unit, generator=generator)
    y = torch.tanh(x @ torch.randn(2 * unit, 1, generator=generator) / math.sqrt(2 * unit))
    return x.to(device), y.to(device)


def _evaluate(model: nn.Module, unit: int, device: str) -> float:
    """The loss of ``model`` as it computes, outside any forward_context, in float32."""
    x, y = _data(unit, device)
    with torch.no_grad():
        return float(F.mse_loss(model(x).float(), y))


@functools.cache
def _reference(unit: int, device: str) -> tuple[float, float]:
    """The loss of the plain model before and after training it in float32 without any plugin."""
    model = copy.deepcopy(_template(unit)).to(device)
    before = _evaluate(model, unit, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    x, y = _data(unit, device)
    for _ in range(_STEPS):
        optimizer.zero_grad()
        torch.autograd.backward(F.mse_loss(model(x), y))
        optimizer.step()
    return before, _evaluate(model, unit, device)


def _plain(subject: Subject, contract: Contract) -> nn.Sequential:
    """A fresh float32 copy of the conversion model on the device, always with the same weights."""
    return copy.deepcopy(_template(_unit(contract))).to(subject.torch_device)


def _make(subject: Subject) -> Any:
    """A new object for the subject's target, without the suite's GradScaler options (no converting contract scales)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # "slow" precisions warn on every call
        return mixprec.get_precision(
            subject.precision, str(subject.device), backend=subject.backend.name, target=subject.target
        )


# --- which layers the contract converts ------------------------------------------------------------


def _classes(contract: Contract) -> dict[type, str]:
    """The classes ``converts_modules`` names, imported, each with its name as the contract spells it."""
    found: dict[type, str] = {}
    for name in contract.converts_modules:
        module_name, _, attribute = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise CheckFailed(
                f"the contract's converts_modules names {name!r}, which does not import ({type(exc).__name__}: {exc});"
                " name each class by the module it is importable from, e.g. 'torch.nn.Linear'"
            ) from None
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise CheckFailed(f"the contract's converts_modules names {name!r}, which is not a torch.nn.Module class")
        found[cls] = name
    return found


def _eligible(module: nn.Module, multiple: int) -> bool:
    weight = getattr(module, "weight", None)
    return not isinstance(weight, Tensor) or all(size % multiple == 0 for size in weight.shape)


def _describe(module: nn.Module) -> str:
    weight = getattr(module, "weight", None)
    shape = "x".join(map(str, weight.shape)) if isinstance(weight, Tensor) else "no weight"
    return f"{type(module).__qualname__} (weight {shape})"


def _layout(model: nn.Module, contract: Contract) -> tuple[dict[str, type], dict[str, nn.Module]]:
    """The plain model's layers the contract converts (name -> class), and every other module (name -> module)."""
    classes = _classes(contract)
    converted: dict[str, type] = {}
    others: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        if type(module) in classes and _eligible(module, contract.dims_multiple):
            converted[name] = type(module)
        else:
            others[name] = module
    if not converted:
        present = sorted({type(m).__qualname__ for m in model.modules()})
        raise CheckSkipped(
            f"the suite's conversion model has layers of {', '.join(present)}, none of the classes the contract"
            f" converts ({', '.join(contract.converts_modules)}), so their conversion is not checked"
        )
    return converted, others


def _unconverted(model: nn.Module, expected: dict[str, type], contract: Contract, what: str) -> None:
    """Require every layer the contract converts to have been replaced in ``model``, in place."""
    modules = dict(model.named_modules())
    gone = [name for name in expected if name not in modules]
    _require(
        not gone,
        f"{what}, the model has no module named {', '.join(gone)}: converted layers replace the plain ones under"
        " the same names (setattr on the parent), so that checkpoints keep their keys",
    )
    left = [f"{name!r}: {_describe(modules[name])}" for name, cls in expected.items() if type(modules[name]) is cls]
    _require(
        not left,
        f"{what}, {len(left)} of {len(expected)} layers the contract converts are still plain ({'; '.join(left)}):"
        f" each layer of {', '.join(contract.converts_modules)} whose weight's dimensions are multiples of"
        f" {contract.dims_multiple} must be replaced by the precision's own layer, computing in"
        f" {contract.matmul_dtype or contract.compute_dtype}, in the module given to convert_module (as torchao"
        " converts: Fabric and the Trainer keep training the module they were given)",
    )


# --- the checks ------------------------------------------------------------------------------------


@check(applies=_converts)
def converts_eligible_layers(subject: Subject, contract: Contract) -> None:
    """convert_module replaces each layer of the listed classes whose weight sizes are multiples of dims_multiple."""
    p = subject.make()
    plain = _plain(subject, contract)
    expected, _ = _layout(plain, contract)
    _unconverted(p.convert_module(plain), expected, contract, "after convert_module")


@check(applies=_converts)
def conversion_leaves_other_layers(subject: Subject, contract: Contract) -> None:
    """convert_module leaves every other module as it was: its class, and its parameters in parameter_dtype."""
    p = subject.make()
    reference = _plain(subject, contract)
    _, others = _layout(reference, contract)
    converted = dict(p.convert_module(_plain(subject, contract)).named_modules())
    dtype = parameter_dtype(contract)
    for name, module in others.items():
        got = converted.get(name)
        _require(
            got is not None and type(got) is type(module),
            f"after convert_module the module {name!r}, a {_describe(module)} the contract does not convert, is"
            f" {'gone' if got is None else 'a ' + _describe(got)}: convert only the layers of"
            f" {', '.join(contract.converts_modules)} whose dimensions are multiples of {contract.dims_multiple}",
        )
        assert got is not None
        for param_name, param in module.named_parameters(recurse=False):
            mine = dict(got.named_parameters(recurse=False)).get(param_name)
            _require(
                mine is not None and mine.dtype == dtype and torch.equal(mine.detach(), param.detach().to(dtype)),
                f"after convert_module the parameter {name}.{param_name} of a module the contract does not convert is"
                f" {'gone' if mine is None else f'{mine.dtype}, changed'}; it must keep its values, in {dtype}",
            )


@check(applies=_converts_matmuls)
def converted_matmul_dtype(subject: Subject, contract: Contract) -> None:
    """A converted linear layer's output has the rounding error of matmul_dtype operands, with dynamic scaling.

    Inputs and weights are in [0.5, 1] with random signs, exactly representable in compute_dtype, at
    magnitudes 2**-16, 1 and 2**16, and the output is compared with the float64 product. Relative to
    ``|x| @ |W|.T`` the error of each output is at most ``2u`` for operands rounded to a dtype with
    unit roundoff ``u`` (plus the output's rounding to compute_dtype): float8_e4m3fn's ``u`` is 2**-4,
    bfloat16's 2**-8. So the largest error must exceed what compute_dtype alone can give (``2u`` of
    it: measured 0.0017 for bfloat16 against a bound of 0.0078) and stay within matmul_dtype's bound
    (measured 0.029 for torchao's float8 against 0.137). Without scaling, 2**16 overflows
    float8_e4m3fn (its largest value is 448) and 2**-16 underflows it, far outside the bound.

    It tells that the operands were rounded, after scaling, to a dtype no finer and no coarser than
    matmul_dtype. It cannot tell how: torchao's CPU emulation (float8 operands multiplied in
    float32) passes as float8 tensor cores do, as it should; nor another format of the same
    precision (float8_e4m3fnuz); nor the dtypes of the backward's matmuls.
    """
    classes = _classes(contract)
    if nn.Linear not in classes:
        raise CheckSkipped("the contract does not convert torch.nn.Linear, the layer this check measures")
    compute, matmul = compute_dtype(contract), torch_dtype(contract.matmul_dtype or contract.compute_dtype)
    compute_u, matmul_u = torch.finfo(compute).eps / 2, torch.finfo(matmul).eps / 2
    size = _unit(contract)
    generator = torch.Generator().manual_seed(0)

    def values(*shape: int) -> Tensor:
        signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        magnitudes = 0.5 + 0.5 * torch.rand(shape, generator=generator)
        return (signs * magnitudes).to(compute).double()

    weight, inputs = values(size, size), values(2 * size, size)
    p = subject.make()
    errors = {}
    for scale in (2.0**-16, 1.0, 2.0**16):
        linear = nn.Linear(size, size, bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight * scale)
        layer = p.convert_module(nn.Sequential(linear).to(subject.torch_device))
        x = (inputs * scale).float().to(subject.torch_device)
        with torch.no_grad(), p.forward_context():
            out = layer(p.convert_input(x))
        exact = (inputs * scale) @ (weight * scale).T
        magnitude = (inputs * scale).abs() @ (weight * scale).abs().T
        errors[scale] = float(((out.double().cpu() - exact).abs() / magnitude).max())
    low, high = 2 * compute_u, 2 * matmul_u + matmul_u**2 + 2 * compute_u
    shown = ", ".join(f"{error:.3g} at magnitude 2**{round(math.log2(scale))}" for scale, error in errors.items())
    for error in errors.values():
        _require(
            error <= high,
            f"a converted nn.Linear's largest output error relative to |x| @ |W|.T is {shown}; operands rounded to"
            f" {contract.matmul_dtype} give at most {high:.3g}. Scale each operand to the float8 range (dynamic"
            " scaling, as torchao does) before rounding it, or the largest values overflow and the smallest vanish",
        )
        if matmul_u > compute_u:
            _require(
                error > low,
                f"a converted nn.Linear's largest output error relative to |x| @ |W|.T is {shown}: no more than"
                f" {contract.compute_dtype} alone gives (at most {low:.3g}), so its matmul does not compute in"
                f" {contract.matmul_dtype}: the converted layers must cast their operands to it (torchao's"
                " Float8Linear does)",
            )


@check(applies=_converts, targets=FABRIC)
def converted_training_matches_fp32(subject: Subject, contract: Contract) -> None:
    """The converted model trained under the precision ends within the contract's rtol of it trained in float32.

    30 SGD steps take the conversion model's loss from 0.59 to 0.011 in float32 on a CPU; torchao's float8
    layers land within 1.2% of that ("tensorwise"; "rowwise" 0.4%, "rowwise_with_gw_hp" 2.3%), bfloat16
    within 0.2%. The model is evaluated as it computes (its converted layers in their matmul dtype),
    without forward_context.
    """
    p = subject.make()
    model = p.convert_module(_plain(subject, contract))
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    unit, device = _unit(contract), str(subject.device)
    x, y = _data(unit, device)
    for _ in range(_STEPS):
        optimizer.zero_grad()
        with p.forward_context():
            out = model(p.convert_input(x))
        loss = F.mse_loss(p.convert_output(out), y)
        p.backward(loss, model)
        p.optimizer_step(optimizer)
    start, reference = _reference(unit, device)
    got = _evaluate(model, unit, device)
    _require(
        abs(got - reference) <= contract.rtol * reference,
        f"after {_STEPS} steps the converted model's loss is {got:.5g}; float32 training of the plain model reaches"
        f" {reference:.5g} (from {start:.5g}), and the contract wants it within {contract.rtol:.0%} of that. The"
        " conversion checks above say which part is wrong; if none fails, the declared training_rtol is too tight",
    )


@check(applies=_converts, targets=FABRIC)
def converted_state_dict_matches_plain(subject: Subject, contract: Contract) -> None:
    """A converted model's state_dict is the plain model's (keys, shapes, dtypes): it loads into one and back."""
    p = subject.make()
    plain = _plain(subject, contract)
    model = p.convert_module(_plain(subject, contract))
    _one_step(p, model, subject, contract)
    state, expected = model.state_dict(), plain.state_dict()
    extra, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    _require(
        not extra and not missing,
        f"the converted model's state_dict has the keys {extra} that the plain model's lacks and lacks {missing}:"
        " a converted layer keeps the plain layer's parameters and buffers under their names, and keeps scales or"
        " statistics of its own out of the state_dict (persistent=False), so that checkpoints move between precisions",
    )
    dtype = parameter_dtype(contract)
    for key, value in expected.items():
        want = dtype if value.is_floating_point() else value.dtype
        got = state[key]
        _require(
            isinstance(got, Tensor) and got.shape == value.shape and got.dtype == want,
            f"the converted model's state_dict holds {key!r} as {_tensor(got)}; the plain model's is"
            f" {tuple(value.shape)} {want}: keep the master weights as they are",
        )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, weights_only=True)
        plain.load_state_dict(loaded)
    except Exception as exc:
        raise CheckFailed(
            f"the converted model's state_dict, saved with torch.save, does not load into the plain model"
            f" (torch.load(weights_only=True), load_state_dict): {type(exc).__name__}: {str(exc).splitlines()[0]}."
            " Keep plain tensors in it, not tensor subclasses of the precision's own"
        ) from None
    _close(
        [plain.state_dict()[key] for key in expected],
        [state[key] for key in expected],
        "the plain model holds other values than the converted one after loading its state_dict",
    )
    fresh = _plain(subject, contract)
    back = p.convert_module(_plain(subject, contract))
    try:
        back.load_state_dict(fresh.state_dict())
    except Exception as exc:
        raise CheckFailed(
            f"a plain model's state_dict does not load into the converted model: {type(exc).__name__}:"
            f" {str(exc).splitlines()[0]}"
        ) from None
    loaded_back, plain_state = back.state_dict(), fresh.state_dict()
    _close(
        [loaded_back[key] for key in expected],
        [value.to(dtype) if value.is_floating_point() else value for value in plain_state.values()],
        "the converted model holds other values than the plain model's state_dict it loaded",
    )


def _tensor(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {type(value).__name__} {tuple(value.shape)} {value.dtype}"
    return f"a {type(value).__name__}"


def _one_step(p: Precision, model: nn.Module, subject: Subject, contract: Contract) -> None:
    """One SGD step through ``p``, so that the weights differ from the template's."""
    x, y = _data(_unit(contract), str(subject.device))
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    with p.forward_context():
        out = model(p.convert_input(x))
    p.backward(F.mse_loss(p.convert_output(out), y), model)
    p.optimizer_step(optimizer)


def _hooks(module: nn.Module) -> int:
    return sum(
        len(hooks)
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
            module._state_dict_hooks,
            module._load_state_dict_pre_hooks,
        )
    )


def _snapshot(model: nn.Module, p: Precision, subject: Subject, contract: Contract) -> tuple[Any, ...]:
    x, _ = _data(_unit(contract), str(subject.device))
    with torch.no_grad(), p.forward_context():
        out = model(p.convert_input(x))
    layers = [(name, type(m).__qualname__, _hooks(m)) for name, m in model.named_modules()]
    return layers, [id(param) for param in model.parameters()], out


@check(applies=_converts, targets=FABRIC)
def conversion_idempotent(subject: Subject, contract: Contract) -> None:
    """convert_module of a converted model changes nothing: the same layers, parameters and hooks, the same output."""
    p = subject.make()
    model = p.convert_module(_plain(subject, contract))
    layers, params, out = _snapshot(model, p, subject, contract)
    for second, who in ((p, "the same object"), (subject.make(), "a new object")):
        again = second.convert_module(model)
        layers_again, params_again, out_again = _snapshot(again, p, subject, contract)
        changed = [f"{a} -> {b}" for a, b in zip(layers, layers_again, strict=False) if a != b]
        _require(
            layers_again == layers,
            f"converting the converted model again with {who} changed its modules (name, class, hooks):"
            f" {'; '.join(changed) or f'{len(layers)} modules became {len(layers_again)}'}. Leave layers that are"
            " already converted as they are and register no hook twice (Fabric.setup converts a model the user may"
            " have converted)",
        )
        _require(
            params_again == params,
            f"converting the converted model again with {who} replaced its parameters, so an optimizer made after"
            " the first conversion no longer steps the model: keep the parameter objects",
        )
        _close(out_again, out, f"converting the converted model again with {who} changed its output")


def _steps_converted(model: nn.Module, before: dict[str, Tensor], expected: dict[str, type], what: str) -> None:
    """Require the optimizer to have changed the weight of every converted layer."""
    modules = dict(model.named_modules())
    stale = [name for name in expected if torch.equal(modules[name].weight.detach().cpu(), before[name])]
    _require(
        not stale,
        f"{what} left the weights of the converted layers {stale} as they were: the optimizer steps other"
        " tensors than the converted model's. Convert in place, keeping the parameter objects",
    )


@check(applies=_converts, targets=FABRIC)
def fabric_setup_converts(subject: Subject, contract: Contract) -> None:
    """Fabric(plugins=[p]).setup converts the model, and the optimizer made before setup trains its converted layers."""
    p = subject.make()
    fabric = fabric_for(subject, p)
    device = subject.device
    module = _plain(subject, contract)
    expected, _ = _layout(module, contract)
    before = {name: m.weight.detach().cpu().clone() for name, m in module.named_modules() if name in expected}
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=_LR))
    _unconverted(model.module, expected, contract, "after fabric.setup(model, optimizer), in the model it was given")
    x, y = _data(_unit(contract), str(device))
    optimizer.zero_grad()
    fabric.backward(F.mse_loss(model(x).float(), y))
    optimizer.step()
    _steps_converted(model.module, before, expected, "a step of the optimizer fabric.setup returned")


@check(applies=_converts, targets=TRAINER)
def trainer_converts(subject: Subject, contract: Contract) -> None:
    """Trainer(plugins=[p]).fit, p for target="trainer", converts the LightningModule's layers and trains them."""
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.accelerators import AcceleratorRegistry

    device = subject.device
    if device.type not in AcceleratorRegistry:
        raise CheckSkipped(f"the Lightning Trainer has no accelerator named {device.type!r}")
    x, y = _data(_unit(contract), "cpu")

    class Module(LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs: Tensor) -> Tensor:
            out: Tensor = self.net(inputs)
            return out

        def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
            inputs, targets = batch
            return F.mse_loss(self(inputs).float(), targets)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=_LR)

        def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
            return DataLoader(TensorDataset(x, y), batch_size=len(x))

    net = _plain(subject, contract)
    expected, _ = _layout(net, contract)
    before = {name: m.weight.detach().cpu().clone() for name, m in net.named_modules() if name in expected}
    p = _make(subject)
    module = Module(net)
    with quiet_trainer():
        trainer = Trainer(
            accelerator=device.type,
            devices=1 if device.index is None else [device.index],
            plugins=[p],
            max_steps=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        try:
            trainer.fit(module)
        except Exception as exc:
            raise CheckFailed(
                f"Trainer.fit raised {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}. The Trainer's"
                " strategy calls convert_module on the LightningModule and keeps training the module it was"
                " given: convert its layers in place and return it"
            ) from None
    _unconverted(module.net, expected, contract, "after Trainer.fit")
    _steps_converted(module.net, before, expected, "Trainer.fit")
