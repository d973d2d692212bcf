"""The checks of what a Fabric training loop asks of the object over several calls, beyond each method alone.

A loop steps many times, clips at every step, steps with a closure through the GradScaler, evaluates
under ``torch.no_grad()``, adds parameter groups as it unfreezes layers, calls the strategy's
``pre_backward``/``backward``/``post_backward`` around each backward, and saves the object's state
while training goes on. Each of these is one promise of Lightning's ``Precision`` (as Fabric's
``Strategy`` and ``_FabricOptimizer`` call it), of ``torch.amp.GradScaler`` or of mixprec's README,
and one check here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import mixprec
from mixprec._contract import Contract
from mixprec._errors import PrecisionWarning
from mixprec.testing._base import (
    _LR,
    FABRIC,
    CheckFailed,
    CheckSkipped,
    Subject,
    _changed,
    _loss,
    _param_groups,
    _poison,
    _require,
    _scale,
    _scaler,
    _true_gradients,
    _weights,
    check,
    compute_dtype,
    parameter_dtype,
)


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.cat([t.float().flatten() for t in tensors])))


def _grads(model: nn.Module) -> list[Tensor]:
    grads = [param.grad for param in model.parameters()]
    if any(grad is None for grad in grads):
        raise CheckFailed("backward() left parameters without gradients; it must compute them (tensor.backward())")
    return [grad for grad in grads if grad is not None]


@check(applies=_scaler, targets=FABRIC)
def unscale_before_clipping_every_step(subject: Subject, contract: Contract) -> None:
    """unscale_gradients() gives the true gradients at every step, not only the first: what it remembers of an
    unscaling ends with the step."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(_param_groups(model))
    for step in range(1, 4):
        true = _norm(_true_gradients(model, subject))
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        p.unscale_gradients(optimizer)
        norm = _norm(_grads(model))
        _require(
            math.isclose(norm, true, rel_tol=1e-3),
            f"at step {step}, after unscale_gradients() the gradient norm is {norm:g}, not the true {true:g}:"
            " unscale with self.scaler.unscale_(optimizer) at every step (the GradScaler itself knows when it has"
            " unscaled since the last step; a flag of your own must be reset by every step)",
        )
        p.optimizer_step(optimizer)


@check(applies=_scaler, targets=FABRIC)
def overflow_while_clipping_skipped(subject: Subject, contract: Contract) -> None:
    """A step whose gradients overflowed is skipped after clipping too: unscale_gradients(), clip_grad_norm_(...,
    error_if_nonfinite=False), optimizer_step() leave the weights unchanged and back the scale off.

    README: with "16-mixed", clip with ``error_if_nonfinite=False`` "so that an overflowing step is skipped by
    the GradScaler instead of raising".
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    p.backward(_loss(model, subject), model)
    _poison(model, math.inf)
    scale = _scale(p)
    p.unscale_gradients(optimizer)
    torch.nn.utils.clip_grad_norm_(list(p.main_params(optimizer)), 1.0, error_if_nonfinite=False)
    before = _weights(model)
    p.optimizer_step(optimizer)
    changed = _changed(before, model)
    _require(
        changed == 0 and _scale(p) < scale,
        f"a step whose gradients overflowed, clipped first, changed {changed} parameter tensor(s) and left the scale"
        f" at {_scale(p):g} (from {scale:g}): unscale_gradients must let the GradScaler see the inf/NaN"
        " (self.scaler.unscale_(optimizer) on the gradients as they are, never sanitised first), so that the"
        " step is skipped and the scale backs off",
    )


@check(applies=_scaler, targets=FABRIC)
def nonfinite_in_any_group_skipped(subject: Subject, contract: Contract) -> None:
    """A step is skipped when any gradient of any parameter group holds inf or NaN, the last one's too."""
    for bad in (math.inf, math.nan):
        p = subject.make()
        model = p.convert_module(subject.model())
        optimizer = torch.optim.SGD(_param_groups(model))
        p.backward(_loss(model, subject), model)
        last = list(model.parameters())[-1]
        if last.grad is None:
            raise CheckFailed("backward() left parameters without gradients; it must compute them (tensor.backward())")
        last.grad.view(-1)[-1] = bad
        before = _weights(model)
        p.optimizer_step(optimizer)
        changed = _changed(before, model)
        _require(
            changed == 0,
            f"a step with a {bad} in the last gradient of the last parameter group changed {changed} parameter"
            " tensor(s); the GradScaler checks every group: step through self.scaler.step(optimizer)",
        )


@check(targets=FABRIC)
def gradients_kept_after_step(subject: Subject, contract: Contract) -> None:
    """optimizer_step() leaves every parameter's gradient in place, as optimizer.step() does: zeroing them is the
    loop's (optimizer.zero_grad()), and a loop may read them after the step."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    p.backward(_loss(model, subject), model)
    p.optimizer_step(optimizer)
    missing = sum(param.grad is None or not bool(param.grad.any()) for param in model.parameters())
    _require(
        missing == 0,
        f"after optimizer_step() {missing} parameter(s) have no (or all-zero) gradients: leave param.grad as the step"
        " found it; the loop calls optimizer.zero_grad()",
    )


class _StepError(RuntimeError):
    pass


class _Failing(torch.optim.SGD):
    """torch's SGD whose step raises, as an optimizer with a bug or a device error does."""

    def step(self, closure: Any = None) -> Any:
        raise _StepError("the optimizer's step failed")


@check(targets=FABRIC)
def optimizer_errors_propagate(subject: Subject, contract: Contract) -> None:
    """An exception raised by optimizer.step() propagates from optimizer_step(), never swallowed."""
    p = subject.make()
    model = p.convert_module(subject.model())
    p.backward(_loss(model, subject), model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p.optimizer_step(_Failing(model.parameters(), lr=_LR))
    except _StepError:
        return
    raise CheckFailed(
        "optimizer_step() returned although optimizer.step() raised: let the exception propagate; a training loop"
        " must not go on as if the weights had changed"
    )


@check(targets=FABRIC)
def parameters_without_gradients_clipped(subject: Subject, contract: Contract) -> None:
    """unscale_gradients(), clipping and optimizer_step() work when a parameter that requires grad has no gradient
    (a layer the forward did not use) and leave it unchanged."""
    p = subject.make()
    model = p.convert_module(subject.model())
    unused = nn.Parameter(torch.ones(3, device=subject.torch_device, dtype=next(model.parameters()).dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    optimizer.add_param_group({"params": [unused]})
    p.backward(_loss(model, subject), model)
    try:
        p.unscale_gradients(optimizer)
        torch.nn.utils.clip_grad_norm_(list(p.main_params(optimizer)), 1.0)
        p.optimizer_step(optimizer)
    except (AttributeError, TypeError, RuntimeError) as exc:
        raise CheckFailed(
            f"with a parameter whose grad is None, the step raised {type(exc).__name__}: {exc}. Skip parameters"
            " without gradients (p.grad is None), as torch's GradScaler and optimizers do"
        ) from None
    _require(bool((unused.detach() == 1).all()), "optimizer_step() changed a parameter that has no gradient")


@check()
def main_params_follow_added_groups(subject: Subject, contract: Contract) -> None:
    """main_params(optimizer) yields the parameters of groups added after an earlier call too (a loop that unfreezes
    layers adds groups with optimizer.add_param_group), so that clipping reaches them."""
    p = subject.make()
    model = p.convert_module(subject.model())
    first, *rest = list(model.children())
    optimizer = torch.optim.SGD(first.parameters(), lr=_LR)
    list(p.main_params(optimizer))
    for layer in rest:
        if list(layer.parameters()):
            optimizer.add_param_group({"params": list(layer.parameters())})
    got = [id(param) for param in p.main_params(optimizer)]
    want = [id(param) for group in optimizer.param_groups for param in group["params"]]
    _require(
        got == want,
        f"after optimizer.add_param_group, main_params() yielded {len(got)} parameter(s) of the {len(want)} the"
        " optimizer's groups hold: read optimizer.param_groups at every call, never a list kept from an earlier one",
    )


@check(targets=FABRIC)
def backward_hooks_keep_gradients(subject: Subject, contract: Contract) -> None:
    """Fabric's backward (the strategy's pre_backward, backward, post_backward, with the model) leaves the gradients
    backward() alone leaves: the hooks do not clear or change them, so gradients accumulate over backward calls."""
    p = subject.make()
    model = p.convert_module(subject.model())

    def fabric_backward() -> None:
        loss = _loss(model, subject)
        p.pre_backward(loss, model)
        p.backward(loss, model)
        p.post_backward(loss, model)

    for _ in range(2):
        p.backward(_loss(model, subject), model)
    plain = [grad.clone() for grad in _grads(model)]
    model.zero_grad(set_to_none=True)
    fabric_backward()
    fabric_backward()
    ok = all(torch.equal(a, b) for a, b in zip(plain, _grads(model), strict=True))
    _require(
        ok,
        "two of Fabric's backward calls (pre_backward, backward, post_backward) leave other gradients than two"
        " backward() calls alone: the hooks must leave the gradients alone (gradient accumulation adds backward"
        " to backward)",
    )


@check(targets=FABRIC)
def backward_frees_the_graph(subject: Subject, contract: Contract) -> None:
    """backward(tensor, model) without arguments frees the graph, as tensor.backward() does (retain_graph only when
    asked): a graph kept after every step is memory that grows with the loop."""
    p = subject.make()
    model = p.convert_module(subject.model())
    loss = _loss(model, subject)
    p.backward(loss, model)
    try:
        torch.autograd.backward(loss)
    except RuntimeError:
        return
    raise CheckFailed(
        "after backward(loss, model) the loss's graph was still there (a second loss.backward() ran): pass"
        " retain_graph only when the caller does (tensor.backward(*args, **kwargs))"
    )


@check(applies=_scaler, targets=FABRIC)
def state_dict_follows_the_scaler(subject: Subject, contract: Contract) -> None:
    """state_dict() says the scale as it is now, at every call: after a skipped step, the backed-off scale."""
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    p.state_dict()
    p.backward(_loss(model, subject), model)
    _poison(model, math.inf)
    p.optimizer_step(optimizer)
    saved = p.state_dict().get("scale")
    _require(
        saved == _scale(p),
        f"after a skipped step state_dict() holds scale {saved!r}, the GradScaler's scale is {_scale(p):g}: build"
        " the state at every call from self.scaler.state_dict(), never from one kept earlier",
    )


@check(applies=_scaler)
def scaler_defaults(subject: Subject, contract: Contract) -> None:
    """Without options, the GradScaler has torch's defaults (init_scale 2**16, growth_factor 2, backoff_factor 0.5,
    growth_interval 2000), as Lightning's "16-mixed" builds it: options change what the user names, nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        p = mixprec.get_precision(
            subject.precision, str(subject.device), backend=subject.backend.name, target=subject.target
        )
    _scale(p)
    scaler = p.scaler  # type: ignore[attr-defined]
    defaults = inspect.signature(torch.amp.GradScaler.__init__).parameters
    want = {
        name: defaults[name].default for name in ("init_scale", "growth_factor", "backoff_factor", "growth_interval")
    }
    got = {
        "init_scale": scaler.get_scale(),
        "growth_factor": scaler.get_growth_factor(),
        "backoff_factor": scaler.get_backoff_factor(),
        "growth_interval": scaler.get_growth_interval(),
    }
    wrong = {name: value for name, value in got.items() if value != want[name]}
    _require(
        not wrong,
        f"get_precision() without options gave a GradScaler with {wrong}; torch's defaults are {want}: build it with"
        " mixprec.precision.make_scaler(request), which sets only what the user passed",
    )


def _linear_output(p: Any, subject: Subject) -> Tensor:
    model = p.convert_module(subject.model())
    x, _ = subject.data
    with p.forward_context():
        return model[0](p.convert_input(x))  # type: ignore[no-any-return]


@check()
def forward_context_without_grad(subject: Subject, contract: Contract) -> None:
    """Under torch.no_grad() (evaluation) forward_context() computes as with grad enabled: the same dtype, no
    inference mode, no graph. Fabric's forward runs inside it whatever the grad mode; Lightning calls it for
    evaluation and predict steps too."""
    p = subject.make()
    try:
        training = _linear_output(p, subject)
    except RuntimeError as exc:
        raise CheckSkipped(
            f"an nn.Linear does not compute inside forward_context() ({str(exc).splitlines()[0]}): forward_dtype says"
            " why; there is nothing to compare the forward without grad with"
        ) from None
    with torch.no_grad():
        evaluating = _linear_output(p, subject)
    _require(
        evaluating.dtype == training.dtype,
        f"under torch.no_grad() an nn.Linear computes in {evaluating.dtype} inside forward_context(), with grad"
        f" enabled in {training.dtype}: autocast (or the dtype) must not depend on the grad mode",
    )
    _require(
        not evaluating.is_inference(),
        "under torch.no_grad() forward_context() made an inference tensor (torch.inference_mode): its outputs cannot"
        " enter a later autograd graph (a teacher's targets, say); leave the grad mode to the caller",
    )
    _require(
        not evaluating.requires_grad,
        "under torch.no_grad() forward_context() built an autograd graph: it turned grad mode on; leave the grad"
        " mode to the caller",
    )


@check()
def forward_context_keeps_rng_state(subject: Subject, contract: Contract) -> None:
    """forward_context(), module_init_context() and tensor_init_context() leave torch's random number generator as
    they found it: a context that reseeds it makes every step's dropout (and data order) the same."""
    p = subject.make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        torch.rand(3)
        state = torch.get_rng_state()
        for name in ("forward_context", "module_init_context", "tensor_init_context"):
            with getattr(p, name)():
                pass
            _require(
                torch.equal(torch.get_rng_state(), state),
                f"{name}() changed torch's random number generator state (reseeded or drew from it): leave it alone",
            )


def _plain_contract(contract: Contract) -> bool:
    return not contract.converts_modules


@check(applies=_plain_contract)
def converted_module_keeps_its_forward(subject: Subject, contract: Contract) -> None:
    """convert_module() changes parameters, not how the module computes: outside forward_context() the converted
    model computes in its parameters' dtype, with no autocast of its own."""
    p = subject.make()
    model = p.convert_module(subject.model())
    dtype = next(model.parameters()).dtype
    x, _ = subject.data
    first = next(model.children())
    out = first(x.to(dtype))
    whole = model(x.to(dtype))
    _require(
        out.dtype == dtype and whole.dtype == dtype,
        f"outside forward_context() the converted model computes in {whole.dtype}, its parameters are {dtype}:"
        " convert_module must not wrap forward in autocast; autocast belongs in forward_context()",
    )


def _other_layers(device: torch.device) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.ModuleDict(
            {"embedding": nn.Embedding(10, 8), "norm": nn.LayerNorm(8), "conv": nn.Conv1d(8, 8, 3)}
        ).to(device)


@check()
def parameter_dtype_of_every_layer(subject: Subject, contract: Contract) -> None:
    """convert_module() gives every layer's parameters ``parameter_dtype``: nn.Embedding, nn.LayerNorm and
    nn.Conv1d as nn.Linear."""
    p = subject.make()
    model = p.convert_module(_other_layers(subject.torch_device))
    want = parameter_dtype(contract)
    wrong = {name: str(param.dtype) for name, param in model.named_parameters() if param.dtype != want}
    _require(
        not wrong,
        f"after convert_module() these parameters are not {want}: {wrong}: convert every floating parameter"
        " (module.to(dtype) for a true precision; leave them for a mixed one)",
    )


@dataclasses.dataclass
class _Output:
    logits: Tensor
    count: int


class _Pair(NamedTuple):
    first: Tensor
    second: Tensor


def _io_cases(device: torch.device, dtype: torch.dtype) -> list[tuple[str, Any, Callable[[Any], list[Tensor]]]]:
    def t() -> Tensor:
        return torch.ones(2, device=device, dtype=dtype)

    return [
        ("a tensor", t(), lambda out: [out]),
        ("a dataclass", _Output(t(), 3), lambda out: [out.logits]),
        ("a namedtuple", _Pair(t(), t()), lambda out: [out.first, out.second]),
    ]


@check(targets=FABRIC)
def convert_io_of_bare_collections(subject: Subject, contract: Contract) -> None:
    """convert_input() and convert_output() convert a bare tensor, dataclass or namedtuple as they convert the same
    one nested in a dict, keeping its type (a model's output is often a dataclass itself)."""
    p = subject.make()
    low, default = compute_dtype(contract), torch.get_default_dtype()
    for method, given in (("convert_input", default), ("convert_output", low)):
        convert = getattr(p, method)
        for what, data, leaves in _io_cases(subject.torch_device, given):
            bare = convert(data)
            _require(
                type(bare) is type(data),
                f"{method}({what}) returned a {type(bare).__name__}: keep the type (lightning_utilities'"
                " apply_to_collection does)",
            )
            nested = convert({"value": data})["value"]
            got = [str(tensor.dtype) for tensor in leaves(bare)]
            want = [str(tensor.dtype) for tensor in leaves(nested)]
            _require(
                got == want,
                f"{method}({what}) gave its floating tensors {got}, and {want} when the same {what} is nested in a"
                " dict: convert every floating tensor the same way, whatever holds it (apply_to_collection handles"
                " a bare tensor, dataclass or namedtuple too)",
            )


@check()
def load_state_dict_leaves_caller_state(subject: Subject, contract: Contract) -> None:
    """load_state_dict(state) leaves the caller's dict as it was: a checkpoint loaded once can be loaded or saved
    again."""
    state = subject.make().state_dict()
    keys = sorted(state)
    # Whether it loads is load_state_dict_restores's business; here only what loading did to the caller's dict.
    with contextlib.suppress(Exception):
        subject.make().load_state_dict(state)
    _require(
        sorted(state) == keys,
        f"load_state_dict(state) changed the caller's dict: its keys were {keys}, now {sorted(state)}; read it,"
        " never pop from it (copy it first: dict(state))",
    )
