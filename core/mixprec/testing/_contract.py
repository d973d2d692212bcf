"""What a precision object promises, member by member of Lightning's ``Precision``, and the check for each.

A precision's :class:`~mixprec.Contract` fixes its numbers: the dtype it computes in
(``compute_dtype``), its parameters' dtype (``parameter_dtype``), whether ``forward_context()``
autocasts (``autocast``), whether a GradScaler scales the loss (``loss_scaling``), whether inputs
and outputs are cast (``converts_io``), how close to float32 it trains (``rtol``) and which optional
capabilities it lacks (``unsupported``). The standard precisions' contracts are the core's
(:data:`mixprec.STANDARD_CONTRACTS`); a backend declares any other in ``Backend.contracts``, and
the suite reads the same fields from either, so a declared contract is checked exactly like a
standard one.

What follows is what every object promises on top of its numbers, read from Lightning's
``Precision`` (its docstrings and what ``MixedPrecision``, ``HalfPrecision`` and ``DoublePrecision``
do), ``torch.autocast`` and ``torch.amp.GradScaler``. Each promise is one named check.

The object
    - has a contract, the core's or one the backend declares (``contract_declared``);
    - is a ``lightning.fabric.plugins.precision.Precision`` (``is_lightning_precision``), whose
      ``precision`` is the requested string, ``device`` the autocast device type, and ``scaler`` an
      enabled ``torch.amp.GradScaler`` for that device exactly when the contract scales the loss
      (``matches_request``);
    - is new on every call, with a GradScaler of its own (``new_object_per_call``).

``forward_context()``
    - autocasts exactly when the contract says (``forward_autocast``), so that ``nn.Linear`` and
      matmul compute in ``compute_dtype`` (``forward_dtype``) while losses stay float32, as
      ``torch.autocast`` computes them (``fp32_losses``);
    - restores on exit everything it touched, from whatever state it was entered in: autocast
      (enabled and dtype, for the device and the CPU), autocast's cache setting, the default dtype,
      grad mode, inference mode, the float32 matmul precision, deterministic algorithms, the default
      device and torch's layer classes (``forward_context_restores_state``), also when its body
      raises, which propagates (``forward_context_restores_state_after_error``);
    - nests: an inner one changes nothing and leaving it keeps the outer one (``nested_forward_context``);
    - drops autocast's cached casts on exit, so that the next forward sees weights the optimizer
      changed in place (``autocast_cache_cleared``).

``module_init_context()``, ``tensor_init_context()``
    - create parameters and tensors in ``parameter_dtype`` (``parameter_dtype``);
    - restore the global state on exit (``init_contexts_restore_state``), also when the body raises
      (``init_contexts_restore_state_after_error``).

``convert_module(module)``
    - gives parameters ``parameter_dtype`` (``parameter_dtype``), and floating buffers such as
      BatchNorm's running statistics the same dtype, integer buffers left alone (``buffers_converted``);
    - keeps which parameters require grad (``requires_grad_kept``).

``convert_input(data)``, ``convert_output(data)``
    - cast the floating tensors in any nesting of dicts, lists, tuples, namedtuples and dataclasses,
      to ``compute_dtype`` (``convert_input``) or to ``torch.get_default_dtype()`` as it is at the
      call (``convert_output``, ``convert_output_follows_default_dtype``), keeping the structure and
      every other leaf; both leave everything as it is when the contract does not convert I/O;
    - return new containers and leave the caller's containers and tensors as they were
      (``convert_input_leaves_caller_data``, ``convert_output_leaves_caller_data``);
    - keep a tensor that requires grad in the autograd graph (``convert_input_keeps_graph``,
      ``convert_output_keeps_graph``).

``backward(tensor, model, *args, **kwargs)``
    - adds the gradients of ``tensor`` to those already there, as ``tensor.backward()`` does
      (``backward_accumulates``), multiplied by the GradScaler's scale where there is one (``loss_scaled``);
    - passes ``*args`` and ``**kwargs`` on to autograd (``backward_passes_arguments``);
    - leaves parameters that do not require grad without gradients (``frozen_parameters_untouched``).

``optimizer_step(optimizer, **kwargs)``
    - applies the step with the true gradients, in every parameter group with its own settings
      (``step_applied``), and leaves frozen parameters as they are (``frozen_parameters_untouched``);
    - with a GradScaler: skips a step whose gradients hold inf or NaN (``nonfinite_step_skipped``),
      then updates the scale by the options the user passed, which all reach the scaler
      (``scaler_options_applied``): ``backoff_factor`` after a skipped step (``scale_backoff``),
      ``growth_factor`` after ``growth_interval`` finite steps (``scale_growth``);
    - passes ``**kwargs`` on to ``optimizer.step`` (``optimizer_step_passes_arguments``) and returns
      what it returns (``optimizer_step_returns_step_result``);
    - without a GradScaler, runs a closure exactly once, through ``optimizer.step``
      (``optimizer_step_runs_closure_once``), so that LBFGS trains (``lbfgs_closure``, optional);
      with one, refuses LBFGS as Lightning does (``lbfgs_rejected_with_scaler``);
    - steps a fused optimizer like the unfused one (``fused_optimizers``, optional).

``unscale_gradients(optimizer)``, before clipping
    - with a GradScaler, unscales once, so that clipping sees the true gradients of every parameter
      group and the step applies the clipped ones (``unscale_before_clipping``); refuses an optimizer
      that unscales inside its own ``step()`` with Lightning's ``NotImplementedError``
      (``mixprec.UnscalingError`` is one) and changes nothing (``fused_clipping_refused_with_scaler``);
    - without one, changes nothing (``unscale_gradients_without_scaler``), whatever the optimizer
      (``fused_clipping_without_scaler``).

``main_params(optimizer)``
    - yields every parameter of every parameter group, once, in order (``main_params_cover_every_group``).

``state_dict()``, ``load_state_dict(state_dict)``
    - ``state_dict()`` is a dict holding the GradScaler's whole state with torch's own types and
      values (a float scale, an int growth tracker, ...), compared key by key by type and value,
      never by the truth of a comparison with a 0-dim tensor (``state_dict_complete``); empty without
      a scaler; complete before the first step too (``state_dict_before_first_step``); a value, not
      a view: it does not change as training goes on (``state_dict_is_a_snapshot``);
    - it survives ``torch.save`` and ``torch.load(weights_only=True)`` (``state_dict_torch_save``);
    - ``load_state_dict()`` of it restores the whole state in a new object (``load_state_dict_restores``);
    - a state that does not fit (GradScaler state for a precision without one, an empty or partial
      state for one with one, not a dict) is refused with ``mixprec.StateDictError`` and changes
      nothing (``incompatible_state_dict``). Lightning's classes ignore such a state in silence:
      build the object through ``mixprec.precision.mixed_precision()`` (or ``standard_precision()``)
      or subclass ``mixprec.precision.AutocastPrecision``, or put the ``mixprec.precision.ScalerGuard``
      mixin first among a Lightning class's bases.

``teardown()``
    - leaves torch's global state as it was before the object was made (``teardown_restores_state``).

``pre_backward()``, ``post_backward()``
    - hooks with no promise of their own; Fabric calls them around ``backward``, and ``fabric_loop`` runs them.

Training
    - a small model trained under the precision ends within the contract's ``rtol`` of the same model
      trained in float32 (``training_matches_fp32``), and ``Fabric(plugins=[p])`` trains with the
      object (``fabric_loop``).

A contract whose ``converts_modules`` is not empty is also held to the module-conversion checks of
:mod:`mixprec.testing._conversion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

__all__ = ["CAPABILITIES", "SCALER_OPTIONS", "torch_dtype"]

#: Optional capabilities, by the name a backend lists in ``Backend.unsupported`` (for all its
#: precisions) or a contract in ``Contract.unsupported`` (for one), with what each promises. A
#: capability neither lists is required: its check runs and must pass.
CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "fused_optimizers": (
            "optimizer_step() with a fused optimizer (torch.optim.SGD(fused=True)) steps like the unfused one"
            " and, with a GradScaler, skips a step with non-finite gradients; unscale_gradients() refuses it"
            " with a GradScaler and accepts it without one (checked for precisions with float32 or float64"
            " parameters)"
        ),
        "lbfgs_closure": (
            "optimizer_step(optimizer, closure=...) runs the closure, so LBFGS trains (precisions without a"
            " GradScaler; with one, LBFGS is refused, as in Lightning)"
        ),
    }
)

#: The GradScaler options the suite builds precisions with loss scaling from (checks that are about
#: an option pass values of their own). Powers of two keep scaled gradients exact, so "scaled by the
#: scale" is checked bit for bit; the growth interval is long enough that training never grows the
#: scale to overflow.
SCALER_OPTIONS: Mapping[str, float | int] = MappingProxyType(
    {"init_scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a contract names (``"bfloat16"`` -> ``torch.bfloat16``).

    Raises:
        LookupError: this torch has no dtype of that name (``contract_declared`` reports it).
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise LookupError(f"torch {torch.__version__} has no dtype torch.{name}")
    return dtype
