"""The suite's own specification: deliberately broken backends, each failing exactly the checks named for its defect.

Every backend here is the control (Lightning's unmodified precision classes with mixprec's state
refusal, ``ScalerGuard``; it passes everything) with one defect a real author could make, installed
as a real distribution through a real entry point and checked with the same library call
``mixprec check`` makes. The table is the specification: which defect, on which precision, fails
which checks, and nothing else. Most defects fail one check; where one breaks a promise that the
end-to-end checks rely on too (training, Fabric), those are listed with it, and the note says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, STANDARD_CONTRACTS, Report, run
from mixprec.testing._checks_fsdp import FSDP_CHECKS
from tests.conformance.backends import CONTROL_POLICY, broken_policy, install
from tests.conformance.test_broken_promises import MODULES as PROMISE_MODULES
from tests.distributions import Site, site_on_path


@dataclass(frozen=True)
class Defect:
    """One broken backend: its defect (class-body source, or the body of create), and the checks it must fail."""

    name: str
    precision: str
    fails: frozenset[str]
    methods: str = "pass"
    create: str = "return build(request)"
    note: str = ""


def _defect(name: str, precision: str, fails: str, methods: str = "pass", **kwargs: str) -> Defect:
    return Defect(name, precision, frozenset(fails.split()), methods, **kwargs)


_END_TO_END = "training_matches_fp32 lbfgs_closure fabric_loop"
_ALL_BUT_CONTRACT = " ".join(
    c.name
    for c in CHECKS
    if c.applies(STANDARD_CONTRACTS["32-true"])
    and c.name != "contract_declared"
    and "fabric" in c.targets
    and c not in FSDP_CHECKS  # its backend builds no FSDP objects
)

DEFECTS = [
    # --- the object
    _defect(
        "not-a-lightning-precision",
        "32-true",
        _ALL_BUT_CONTRACT,
        create="""
        class Duck:  # every method of Precision, but not a subclass of it
            pass

        obj = build(request)
        duck = Duck()
        for name in dir(obj):
            if not name.startswith("__"):
                setattr(duck, name, getattr(obj, name))
        return duck
        """,
        note="get_precision itself refuses it (PluginError), so every check that builds an object fails",
    ),
    _defect(
        "scaler-for-another-device",
        "16-mixed",
        "nonfinite_in_any_group_skipped overflow_while_clipping_skipped scaler_defaults state_dict_follows_the_scaler "
        "matches_request scaler_options_applied scale_backoff scale_growth nonfinite_step_skipped fused_optimizers"
        " load_state_dict_restores state_dict_torch_save telemetry_counts_steps collapse_detected"
        " state_dict_without_mixprec_entry_loads telemetry_restored_by_load_state_dict"
        " scaler_options_out_of_range_refused scaler_options_at_their_limits_accepted"
        " scaler_state_at_its_limits_loaded unscaling_refused_where_torch_cannot",
        create="""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available. Disabling": the defect itself
            return Mixed("16-mixed", request.device.type, scaler=torch.amp.GradScaler("cuda", **request.options))
        """,
        note="torch disables a GradScaler for a device that is absent: it neither scales, nor skips, nor keeps state",
    ),
    _defect(
        "precision-alias",
        "bf16-mixed",
        "matches_request",
        create="""
        obj = build(request)
        obj.precision = "bf16"  # Lightning's alias, not the canonical string
        return obj
        """,
    ),
    _defect(
        "shared-scaler",
        "16-mixed",
        "scaler_defaults "
        "new_object_per_call scaler_options_applied scale_backoff scale_growth scaler_options_at_their_limits_accepted"
        " training_matches_fp32 fabric_loop",
        create="""
        shared = SHARED.setdefault("scaler", scaler(request))
        return Mixed(request.precision, request.device.type, scaler=shared)
        """,
        note="later objects get the first one's scaler, with the options of the first call; the GradScaler-limit"
        " checks load states at float32's limits into it, which the training checks after them inherit",
    ),
    # --- forward_context
    _defect(
        "no-autocast",
        "bf16-mixed",
        f"forward_autocast forward_dtype nested_forward_context autocast_cache_cleared {_END_TO_END}",
        """
        def forward_context(self):
            return contextlib.nullcontext()
        """,
        note="bfloat16 inputs meet float32 weights without autocast: no forward through the model runs",
    ),
    _defect(
        "wrong-dtype",
        "bf16-mixed",
        "forward_dtype nested_forward_context",
        """
        def forward_context(self):
            return torch.autocast(self.device, dtype=torch.float16)
        """,
        note="it trains, in float16, within the tolerance of bfloat16",
    ),
    _defect(
        "lowers-loss-results",
        "bf16-mixed",
        "fp32_losses",
        """
        @contextlib.contextmanager
        def forward_context(self):
            from torch.overrides import TorchFunctionMode

            class Lower(TorchFunctionMode):  # "keep every activation in bfloat16 to save memory"
                def __torch_function__(self, func, types, args=(), kwargs=None):
                    out = func(*args, **(kwargs or {}))
                    if isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.dim() == 0:
                        return out.to(torch.bfloat16)
                    return out

            with torch.autocast(self.device, dtype=torch.bfloat16), Lower():
                yield
        """,
    ),
    _defect(
        "forward-enables-grad",
        "bf16-mixed",
        "forward_context_without_grad forward_context_restores_state forward_context_restores_state_after_error",
        """
        @contextlib.contextmanager
        def forward_context(self):
            torch.set_grad_enabled(True)  # "a forward pass always needs gradients": not under no_grad()
            with torch.autocast(self.device, dtype=torch.bfloat16):
                yield
        """,
        note="it leaks on both paths, normal exit and error",
    ),
    _defect(
        "forward-disables-autocast-cache",
        "bf16-mixed",
        "forward_context_restores_state forward_context_restores_state_after_error",
        """
        @contextlib.contextmanager
        def forward_context(self):
            torch.set_autocast_cache_enabled(False)  # never put back
            with torch.autocast(self.device, dtype=torch.bfloat16):
                yield
        """,
        note="it leaks on both paths, normal exit and error",
    ),
    _defect(
        "autocast-leaks-after-error",
        "bf16-mixed",
        "forward_context_restores_state_after_error",
        """
        @contextlib.contextmanager
        def forward_context(self):
            context = torch.autocast(self.device, dtype=torch.bfloat16)
            context.__enter__()
            yield
            context.__exit__(None, None, None)  # skipped when the body raises
        """,
    ),
    _defect(
        "exit-disables-autocast",
        "bf16-mixed",
        "nested_forward_context",
        """
        @contextlib.contextmanager
        def forward_context(self):
            with torch.autocast(self.device, dtype=torch.bfloat16):
                yield
            torch.set_autocast_enabled(self.device, False)  # "off", not "as it was"
        """,
    ),
    _defect(
        "stale-autocast-cache",
        "bf16-mixed",
        "autocast_cache_cleared training_matches_fp32 fabric_loop",
        """
        @contextlib.contextmanager
        def forward_context(self):
            enabled, dtype = torch.is_autocast_enabled(self.device), torch.get_autocast_dtype(self.device)
            torch.set_autocast_enabled(self.device, True)  # autocast's flags by hand: its cache is never cleared
            torch.set_autocast_dtype(self.device, torch.bfloat16)
            try:
                yield
            finally:
                torch.set_autocast_enabled(self.device, enabled)
                torch.set_autocast_dtype(self.device, dtype)
        """,
        note="every later forward reuses the first step's casts: training cannot go on (LBFGS, in one step, still can)",
    ),
    # --- module_init_context, tensor_init_context, teardown
    _defect(
        "module-init-leaks-default-dtype",
        "bf16-true",
        "init_contexts_restore_state init_contexts_restore_state_after_error",
        """
        def module_init_context(self):
            torch.set_default_dtype(torch.bfloat16)  # never put back
            return contextlib.nullcontext()
        """,
        note="it leaks on both paths, normal exit and error",
    ),
    _defect(
        "dtype-context-leaks-after-error",
        "16-true",
        "init_contexts_restore_state_after_error forward_context_restores_state_after_error",
        """
        @contextlib.contextmanager
        def tensor_init_context(self):
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch.float16)
            yield
            torch.set_default_dtype(previous)  # skipped when the body raises
        """,
        note="Lightning's HalfPrecision enters tensor_init_context() for forward_context() and module_init_context()",
    ),
    _defect(
        "teardown-keeps-global-setting",
        "bf16-mixed",
        "teardown_restores_state",
        create="""
        torch.set_float32_matmul_precision("medium")  # "faster matmuls while training", never put back
        return build(request)
        """,
    ),
    # --- convert_input, convert_output
    _defect(
        "converts-integers",
        "bf16-mixed",
        "convert_input",
        """
        def convert_input(self, data):
            return apply_to_collection(data, torch.Tensor, lambda tensor: tensor.to(torch.bfloat16))
        """,
    ),
    _defect(
        "converts-input-in-place",
        "bf16-mixed",
        "convert_input_leaves_caller_data",
        """
        def convert_input(self, data):
            if isinstance(data, dict):  # "no copy of the batch"
                for key, value in data.items():
                    data[key] = super().convert_input(value)
                return data
            return super().convert_input(data)
        """,
    ),
    _defect(
        "input-detached",
        "bf16-mixed",
        "convert_input_keeps_graph",
        """
        def convert_input(self, data):
            cast = lambda t: t.detach().to(torch.bfloat16) if t.is_floating_point() else t
            return apply_to_collection(data, torch.Tensor, cast)
        """,
    ),
    _defect(
        "output-stays-low",
        "bf16-mixed",
        "convert_output convert_output_follows_default_dtype",
        """
        def convert_output(self, data):
            return data
        """,
        note="the suite's losses take float32 targets, which autocast and mse_loss accept with bfloat16 outputs",
    ),
    _defect(
        "output-to-float32",
        "bf16-true",
        "convert_output_follows_default_dtype",
        """
        def convert_output(self, data):
            return apply_to_collection(data, torch.Tensor, lambda t: t.float() if t.is_floating_point() else t)
        """,
    ),
    _defect(
        "converts-output-in-place",
        "bf16-mixed",
        "convert_output_leaves_caller_data",
        """
        def convert_output(self, data):
            if isinstance(data, dict):
                for key, value in data.items():
                    data[key] = super().convert_output(value)
                return data
            return super().convert_output(data)
        """,
    ),
    _defect(
        "output-detached",
        "bf16-mixed",
        f"convert_output_keeps_graph {_END_TO_END}",
        """
        def convert_output(self, data):
            cast = lambda t: t.detach().to(torch.get_default_dtype()) if t.is_floating_point() else t
            return apply_to_collection(data, torch.Tensor, cast)
        """,
        note="the loss is computed from converted outputs, so no gradient reaches the model",
    ),
    # --- convert_module
    _defect(
        "half-parameters",
        "bf16-mixed",
        "parameter_dtype_of_every_layer parameter_dtype buffers_converted fused_optimizers fabric_loop",
        """
        def convert_module(self, module):
            return module.to(torch.bfloat16)
        """,
        note="fabric_loop checks the parameters' dtype after setup; torch's fused SGD barely moves bfloat16 parameters",
    ),
    _defect(
        "buffers-not-converted",
        "bf16-true",
        "buffers_converted",
        """
        def convert_module(self, module):
            for param in module.parameters():  # the parameters, not the buffers
                param.data = param.data.to(torch.bfloat16)
            return module
        """,
    ),
    _defect(
        "unfreezes-parameters",
        "bf16-true",
        "requires_grad_kept",
        """
        def convert_module(self, module):
            return super().convert_module(module).requires_grad_(True)  # "make sure it trains"
        """,
    ),
    # --- backward
    _defect(
        "backward-through-every-parameter",
        "bf16-mixed",
        "frozen_parameters_untouched fabric_loop",
        """
        def backward(self, tensor, model, *args, **kwargs):
            super().backward(tensor, model, *args, inputs=list(model.parameters()), **kwargs)
        """,
        note="fabric.backward(loss) passes model=None, which a backend must take",
    ),
    _defect(
        "backward-resets-gradients",
        "bf16-mixed",
        "backward_accumulates fabric_loop",
        """
        def backward(self, tensor, model, *args, **kwargs):
            model.zero_grad()  # "fresh gradients for every backward": no gradient accumulation
            super().backward(tensor, model, *args, **kwargs)
        """,
        note="fabric.backward(loss) passes model=None, which a backend must take",
    ),
    _defect(
        "backward-drops-arguments",
        "bf16-mixed",
        "backward_passes_arguments",
        """
        def backward(self, tensor, model, *args, **kwargs):
            super().backward(tensor, model)
        """,
    ),
    _defect(
        "loss-not-scaled",
        "16-mixed",
        "closure_that_raises_leaves_the_scaler_ready gradients_kept_after_step nonfinite_in_any_group_skipped"
        " optimizer_errors_propagate overflow_while_clipping_skipped parameters_without_gradients_clipped"
        " state_dict_follows_the_scaler unscale_before_clipping_every_step "
        "loss_scaled step_applied frozen_parameters_untouched optimizer_step_returns_step_result"
        " optimizer_step_passes_arguments nonfinite_step_skipped scale_backoff scale_growth unscale_before_clipping"
        " fused_optimizers state_dict_complete state_dict_is_a_snapshot load_state_dict_restores state_dict_torch_save"
        " training_matches_fp32 fabric_loop telemetry_counts_steps collapse_detected"
        " state_dict_without_mixprec_entry_loads fused_clipping_with_scaler_matches_unfused"
        " unscaling_refused_where_torch_cannot"
        " scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready",
        """
        def backward(self, tensor, model, *args, **kwargs):
            tensor.backward(*args, **kwargs)
        """,
        note="a GradScaler that never scaled has no scale yet, and torch refuses to step, unscale or update through it",
    ),
    # --- optimizer_step (one that does not end in super()'s records no telemetry: telemetry_counts_steps)
    _defect(
        "steps-twice",
        "bf16-mixed",
        "step_applied unscale_gradients_without_scaler training_matches_fp32 telemetry_counts_steps",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if "closure" not in kwargs:
                optimizer.step()  # an extra step "to make up for skipped ones"
            return optimizer.step(**kwargs)
        """,
        note="every check that compares the weights after a step sees it; two steps a step diverge",
    ),
    _defect(
        "step-result-dropped",
        "bf16-mixed",
        "optimizer_step_returns_step_result telemetry_counts_steps",
        """
        def optimizer_step(self, optimizer, **kwargs):
            optimizer.step(**kwargs)
        """,
    ),
    _defect(
        "scaler-step-result-dropped",
        "16-mixed",
        "optimizer_step_returns_step_result telemetry_counts_steps collapse_detected"
        " scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if isinstance(optimizer, torch.optim.LBFGS):
                raise TypeError("AMP and the LBFGS optimizer are not compatible.")
            self.scaler.step(optimizer, **kwargs)
            self.scaler.update()
        """,
    ),
    _defect(
        "step-drops-arguments",
        "bf16-mixed",
        "optimizer_step_passes_arguments telemetry_counts_steps",
        """
        def optimizer_step(self, optimizer, **kwargs):
            return optimizer.step(closure=kwargs.get("closure"))
        """,
    ),
    _defect(
        "closure-called-twice",
        "bf16-mixed",
        "optimizer_step_runs_closure_once telemetry_counts_steps",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if kwargs.get("closure") is not None:
                kwargs["closure"]()  # "make sure the gradients exist", and optimizer.step runs it again
            return optimizer.step(**kwargs)
        """,
    ),
    _defect(
        "drops-closure",
        "bf16-mixed",
        "lbfgs_closure optimizer_step_returns_step_result optimizer_step_runs_closure_once"
        " optimizer_step_passes_arguments telemetry_counts_steps",
        """
        def optimizer_step(self, optimizer, **kwargs):
            return optimizer.step()
        """,
        note="it drops every keyword argument, the closure among them",
    ),
    _defect(
        "steps-on-inf",
        "16-mixed",
        "closure_that_raises_leaves_the_scaler_ready nonfinite_in_any_group_skipped overflow_while_clipping_skipped"
        " parameters_without_gradients_clipped scaled_step_runs_closure unscale_before_clipping_every_step "
        "nonfinite_step_skipped fused_optimizers unscale_before_clipping telemetry_counts_steps collapse_detected"
        " fused_clipping_with_scaler_matches_unfused"
        " scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready",
        """
        def optimizer_step(self, optimizer, **kwargs):
            self.scaler.unscale_(optimizer)
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.nan_to_num_(posinf=0.0, neginf=0.0)  # "repair" an overflow, then step
            result = optimizer.step(**kwargs)
            self.scaler.update()
            return result
        """,
        note="a fused SGD steps through the inf gradient too; and it unscales a second time after clipping did",
    ),
    _defect(
        "scaler-ignores-options",
        "16-mixed",
        "scaler_options_applied scale_backoff scale_growth scaler_options_out_of_range_refused"
        " scaler_options_at_their_limits_accepted",
        create="""
        init = request.options.get("init_scale", 65536.0)  # the only option it reads
        return Mixed("16-mixed", request.device.type, scaler=torch.amp.GradScaler(request.device.type, init_scale=init))
        """,
        note="the options it drops are those that govern backoff and growth",
    ),
    _defect(
        "scale-never-updated",
        "16-mixed",
        "overflow_while_clipping_skipped scale_backoff scale_growth telemetry_counts_steps collapse_detected"
        " scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready",
        """
        def optimizer_step(self, optimizer, **kwargs):
            result = self.scaler.step(optimizer, **kwargs)
            self.scaler.update(self.scaler.get_scale())
            return result
        """,
    ),
    _defect(
        "scale-never-grows",
        "16-mixed",
        "scale_growth",
        """
        def optimizer_step(self, optimizer, **kwargs):
            before = self.scaler.get_scale()
            result = super().optimizer_step(optimizer, **kwargs)
            self.scaler.update(min(self.scaler.get_scale(), before))
            return result
        """,
    ),
    _defect(
        "lbfgs-through-scaler",
        "16-mixed",
        "lbfgs_rejected_with_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if isinstance(optimizer, torch.optim.LBFGS):
                return optimizer.step(**kwargs)
            return super().optimizer_step(optimizer, **kwargs)
        """,
    ),
    _defect(
        "closure-run-without-grad",
        "16-mixed",
        "scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if kwargs.get("closure") is None or isinstance(optimizer, torch.optim.LBFGS):
                return super().optimizer_step(optimizer, **kwargs)
            result = kwargs.pop("closure")()  # "grad mode is the caller's business"
            super().optimizer_step(optimizer, **kwargs)
            return result
        """,
        note="and a closure that raises leaves its unscaling behind",
    ),
    _defect(
        "failed-closure-leaves-gradients-unscaled",
        "16-mixed",
        "closure_that_raises_leaves_the_scaler_ready",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if kwargs.get("closure") is None or isinstance(optimizer, torch.optim.LBFGS):
                return super().optimizer_step(optimizer, **kwargs)
            with torch.enable_grad():
                result = kwargs.pop("closure")()  # "a closure that raises leaves nothing to undo"
            super().optimizer_step(optimizer, **kwargs)
            return result
        """,
    ),
    _defect(
        "lbfgs-refused-after-its-closure",
        "16-mixed",
        "lbfgs_rejected_with_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if isinstance(optimizer, torch.optim.LBFGS):
                kwargs.pop("closure")()  # "one evaluation, then Lightning's refusal"
            return super().optimizer_step(optimizer, **kwargs)
        """,
    ),
    _defect(
        "refuses-fused-optimizers",
        "bf16-mixed",
        "fused_optimizers",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if getattr(optimizer, "_step_supports_amp_scaling", False):
                raise NotImplementedError("fused optimizers are not supported")
            return super().optimizer_step(optimizer, **kwargs)
        """,
    ),
    # --- unscale_gradients, main_params
    _defect(
        "clips-scaled-gradients",
        "16-mixed",
        "unscale_before_clipping_every_step unscale_before_clipping fused_clipping_with_scaler_matches_unfused"
        " unscaling_refused_where_torch_cannot",
        """
        def unscale_gradients(self, optimizer):
            pass
        """,
        note="a fused optimizer's gradients are left scaled too",
    ),
    _defect(
        "unscales-where-torch-cannot",
        "16-mixed",
        "unscaling_refused_where_torch_cannot",
        """
        def refuse_unscaling(self, optimizer):
            pass  # "torch's GradScaler refuses it itself"
        """,
        note="torch's bare RuntimeError reaches the user instead of mixprec.UnscalingError",
    ),
    _defect(
        "unscale-casts-gradients",
        "bf16-true",
        "parameters_without_gradients_clipped unscale_gradients_without_scaler",
        """
        def unscale_gradients(self, optimizer):
            for group in optimizer.param_groups:  # "clip in float32"
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad = param.grad.float()
        """,
    ),
    _defect(
        "fused-clipping-refused-with-scaler",
        "16-mixed",
        "fused_clipping_with_scaler_matches_unfused",
        """
        def unscale_gradients(self, optimizer):
            if getattr(optimizer, "_step_supports_amp_scaling", False):  # Lightning's refusal
                raise NotImplementedError("Gradient clipping is not implemented for optimizers handling the unscaling.")
            super().unscale_gradients(optimizer)
        """,
    ),
    _defect(
        "fused-gradients-unscaled-by-hand",
        "16-mixed",
        "fused_clipping_with_scaler_matches_unfused",
        """
        def unscale_gradients(self, optimizer):
            if not getattr(optimizer, "_step_supports_amp_scaling", False):
                return super().unscale_gradients(optimizer)
            inverse = 1.0 / self.scaler.get_scale()  # behind the scaler's back: its step() unscales them again
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.mul_(inverse)
        """,
    ),
    _defect(
        "fused-clipping-refused-without-scaler",
        "bf16-mixed",
        "fused_clipping_without_scaler",
        """
        def unscale_gradients(self, optimizer):
            if getattr(optimizer, "_step_supports_amp_scaling", False):  # refused whether or not there is a scaler
                raise NotImplementedError("Gradient clipping is not implemented for optimizers handling the unscaling.")
            super().unscale_gradients(optimizer)
        """,
    ),
    _defect(
        "main-params-first-group",
        "bf16-mixed",
        "main_params_follow_added_groups main_params_cover_every_group",
        """
        def main_params(self, optimizer):
            yield from optimizer.param_groups[0]["params"]
        """,
    ),
    # --- state_dict, load_state_dict
    _defect(
        "state-dict-drops-keys",
        "16-mixed",
        "state_dict_complete state_dict_before_first_step load_state_dict_restores state_dict_torch_save",
        """
        def state_dict(self):
            state = super().state_dict()
            del state["_growth_tracker"]
            return state
        """,
        note="ScalerGuard refuses the incomplete state when it is loaded back, which the round trips see",
    ),
    _defect(
        "state-dict-tensor-scale",
        "16-mixed",
        "state_dict_complete state_dict_before_first_step load_state_dict_restores state_dict_torch_save",
        """
        def state_dict(self):
            state = super().state_dict()
            state["scale"] = torch.tensor(state["scale"])  # a 0-dim tensor: == 1024.0 is truthy
            return state
        """,
        note="a scaler loaded from it keeps the tensor, so the round trips give it back",
    ),
    _defect(
        "state-dict-empty-before-first-step",
        "16-mixed",
        "state_dict_before_first_step",
        """
        def state_dict(self):
            if self.scaler._scale is None:  # "nothing to save yet"
                return {}
            return super().state_dict()
        """,
    ),
    _defect(
        "state-dict-live",
        "16-mixed",
        "state_dict_is_a_snapshot state_dict_complete",
        """
        def optimizer_step(self, optimizer, **kwargs):
            result = super().optimizer_step(optimizer, **kwargs)
            self.state_dict().update(self.scaler.state_dict())  # the state kept up to date, in one dict
            return result

        def state_dict(self):
            if "_state" not in self.__dict__:
                self._state = self.scaler.state_dict()
            return self._state
        """,
    ),
    _defect(
        "state-dict-holds-objects",
        "16-mixed",
        "state_dict_torch_save state_dict_is_a_snapshot",
        """
        def state_dict(self):
            return {**super().state_dict(), "scaler": self.scaler}  # "the scaler itself, for convenience"
        """,
        note="the scaler it holds is live state, which the snapshot check sees change",
    ),
    _defect(
        "load-ignores-input",
        "16-mixed",
        "load_state_dict_restores state_dict_torch_save incompatible_state_dict telemetry_restored_by_load_state_dict"
        " state_dict_without_mixprec_entry_loads scaler_state_out_of_range_refused scaler_state_at_its_limits_loaded",
        """
        def load_state_dict(self, state_dict):
            pass
        """,
        note="loading nothing both loses the state and accepts any",
    ),
    _defect(
        "refuses-old-checkpoints",
        "16-mixed",
        "state_dict_without_mixprec_entry_loads scaler_state_at_its_limits_loaded",
        """
        def load_state_dict(self, state_dict):
            if isinstance(state_dict, dict) and state_dict and "mixprec" not in state_dict:  # "only our own format"
                raise __import__("mixprec").StateDictError("this state has no manifest")
            super().load_state_dict(state_dict)
        """,
    ),
    _defect(
        "lenient-state-loading",
        "bf16-mixed",
        "incompatible_state_dict telemetry_restored_by_load_state_dict",
        """
        def load_state_dict(self, state_dict):
            MixedPrecision.load_state_dict(self, state_dict)  # Lightning's: ignores anything without a scaler
        """,
    ),
]


class Reports:
    """Each broken backend installed once, its suite run once, on first use: the tests share the runs.

    The defects here are in Fabric's objects (the Trainer's are proven in test_broken_trainer.py), so a run
    checks Fabric's objects unless ``target`` is None (both).
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str, policy: str, precisions: tuple[str, ...], target: str | None = "fabric") -> Report:
        if name not in self.runs:
            install(self.site, name, policy, precisions=precisions)
            self.runs[name] = run(name, target=target)
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken"))) as site:
        yield Reports(site)


def _failed(report: Report) -> set[str]:
    return {r.check for r in report.failures}


def test_every_defect_names_checks_that_exist() -> None:
    names = {check.name for check in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


def test_the_defects_have_distinct_names() -> None:
    assert len({d.name for d in DEFECTS}) == len(DEFECTS)


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_backend_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    report = reports.of(f"broken-{defect.name}", broken_policy(defect.methods, defect.create), (defect.precision,))
    assert _failed(report) == defect.fails, str(report)


STANDARD = ("16-mixed", "bf16-mixed", "16-true", "bf16-true", "32-true", "64-true")


@pytest.mark.slow
def test_lightnings_own_classes_with_scaler_guard_pass_every_check_of_every_standard_precision(
    reports: Reports,
) -> None:
    report = reports.of("control", CONTROL_POLICY, STANDARD, target=None)
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)


def test_every_check_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {check for d in DEFECTS for check in d.fails}
    # contract_declared is proven in test_suite.py, the module-conversion checks in test_broken_conversion.py,
    # the Trainer's in test_broken_trainer.py, the checks of the modules test_broken_promises.py names there,
    # the GradScaler-limit checks in test_scaler_limits.py, the forward-context ones in test_forward_context.py,
    # the Fabric loop's in test_broken_fabric_loop.py.
    elsewhere = (
        "_conversion",
        "_checks_trainer",
        "_checks_trainer_refusals",
        "_checks_scaler_limits",
        "_checks_forward_context",
        "_checks_fabric_loop",
        "_checks_trainer_loop",
        "_checks_fsdp",
        *PROMISE_MODULES,
    )
    ours = [c.name for c in CHECKS if c.function.__module__.rpartition(".")[2] not in elsewhere]
    assert [name for name in ours if name not in proven] == ["contract_declared"]


@pytest.mark.slow
def test_lightnings_mixed_precision_fails_the_state_contract_saying_what_to_build(reports: Reports) -> None:
    policy = broken_policy(create="return MixedPrecision(request.precision, request.device.type)")
    report = reports.of("lightning-mixed", policy, ("bf16-mixed",))
    failures = {failure.check: failure.detail for failure in report.failures}
    # Lightning's class drops state it cannot take, saves no "mixprec" entry and records no telemetry.
    assert set(failures) == {
        "incompatible_state_dict",
        "state_dict_complete",
        "telemetry_counts_steps",
        "telemetry_restored_by_load_state_dict",
    }
    for detail in failures.values():
        assert "subclass mixprec.precision.AutocastPrecision" in detail
    assert "mixprec.precision.mixed_precision()" in failures["incompatible_state_dict"]
