"""The list of every check, in the order the suite runs them: one flat, explicit tuple, :data:`CHECKS`.

The checks are defined in one module per part of Lightning's ``Precision`` interface, each a set of
small functions named after the behaviour they test: ``_checks_object`` (the object),
``_checks_context`` (``forward_context``, the init contexts, ``teardown``), ``_checks_convert``
(``convert_module``, ``convert_input``, ``convert_output``), ``_checks_step`` (``backward``,
``optimizer_step``, ``unscale_gradients``, ``main_params``), ``_checks_state`` (``state_dict``,
``load_state_dict``), ``_checks_unscaling`` (what a GradScaler cannot unscale), ``_checks_scaled_closure``
(``optimizer_step`` with a closure and a GradScaler), ``_checks_telemetry``
(``telemetry``, collapse detection), ``_checks_training``
(end to end), ``_checks_trainer`` (the Trainer's hooks, a fit and a resume), ``_checks_trainer_refusals``
(the Trainer's refusals), ``_conversion`` (module
conversion), and the promises of the object as a whole, a module each: ``_torch_flags`` (torch's
process-wide switches), ``_teardown``, ``_nesting``, ``_threads``, ``_pickling``, ``_identity`` (conversion in
place), ``_linear_subclasses``, ``_options`` (the option values a contract names) and ``_float8`` (the
format); ``_checks_fsdp`` checks the FSDP objects (``strategy="fsdp"``). What
they share (:class:`~mixprec.testing._base.Check`, :class:`~mixprec.testing._base.Subject`, the
failures and helpers) is in :mod:`mixprec.testing._base`. Importing a group registers nothing: a
check runs because it is listed here, and the docstring of :mod:`mixprec.testing` lists every promise
with its check.
"""

from __future__ import annotations

from mixprec.testing import _checks_context as context
from mixprec.testing import _checks_convert as convert
from mixprec.testing import _checks_fabric_loop as fabric_loop
from mixprec.testing import _checks_forward_context as forward_context
from mixprec.testing import _checks_fsdp as fsdp
from mixprec.testing import _checks_object as object_
from mixprec.testing import _checks_scaled_closure as scaled_closure
from mixprec.testing import _checks_scaler_limits as scaler_limits
from mixprec.testing import _checks_state as state
from mixprec.testing import _checks_step as step
from mixprec.testing import _checks_telemetry as telemetry
from mixprec.testing import _checks_trainer as trainer
from mixprec.testing import _checks_trainer_loop as trainer_loop
from mixprec.testing import _checks_trainer_refusals as trainer_refusals
from mixprec.testing import _checks_training as training
from mixprec.testing import _checks_unscaling as unscaling
from mixprec.testing import _conversion as conversion
from mixprec.testing import _float8 as float8
from mixprec.testing import _identity as identity
from mixprec.testing import _linear_subclasses as subclasses
from mixprec.testing import _nesting as nesting
from mixprec.testing import _options as options
from mixprec.testing import _pickling as pickling
from mixprec.testing import _teardown as teardown
from mixprec.testing import _threads as threads
from mixprec.testing import _torch_flags as flags
from mixprec.testing._base import Check

__all__ = ["CHECKS"]

#: Every per-precision check, in the order the suite runs them.
CHECKS: tuple[Check, ...] = (
    object_.contract_declared,
    object_.is_lightning_precision,
    object_.matches_request,
    object_.new_object_per_call,
    context.forward_autocast,
    context.forward_dtype,
    context.fp32_losses,
    context.forward_context_restores_state,
    context.forward_context_restores_state_after_error,
    context.nested_forward_context,
    context.autocast_cache_cleared,
    forward_context.forward_context_default_dtype,
    context.init_contexts_restore_state,
    context.init_contexts_restore_state_after_error,
    context.teardown_restores_state,
    convert.convert_input,
    convert.convert_input_leaves_caller_data,
    convert.convert_input_keeps_graph,
    convert.convert_output,
    convert.convert_output_follows_default_dtype,
    convert.convert_output_leaves_caller_data,
    convert.convert_output_keeps_graph,
    convert.parameter_dtype,
    convert.buffers_converted,
    convert.requires_grad_kept,
    step.step_applied,
    step.frozen_parameters_untouched,
    step.backward_accumulates,
    step.backward_passes_arguments,
    step.loss_scaled,
    step.optimizer_step_returns_step_result,
    step.optimizer_step_passes_arguments,
    step.optimizer_step_runs_closure_once,
    scaled_closure.scaled_step_runs_closure,
    scaled_closure.closure_that_raises_leaves_the_scaler_ready,
    step.nonfinite_step_skipped,
    step.scaler_options_applied,
    step.scale_backoff,
    step.scale_growth,
    step.unscale_before_clipping,
    step.unscale_gradients_without_scaler,
    unscaling.unscaling_refused_where_torch_cannot,
    step.main_params_cover_every_group,
    step.lbfgs_rejected_with_scaler,
    step.lbfgs_closure,
    step.fused_optimizers,
    step.fused_clipping_with_scaler_matches_unfused,
    step.fused_clipping_without_scaler,
    state.state_dict_complete,
    state.state_dict_before_first_step,
    state.state_dict_is_a_snapshot,
    state.load_state_dict_restores,
    state.state_dict_torch_save,
    state.incompatible_state_dict,
    state.state_dict_without_mixprec_entry_loads,
    telemetry.telemetry_counts_steps,
    telemetry.telemetry_restored_by_load_state_dict,
    telemetry.collapse_detected,
    scaler_limits.scaler_options_out_of_range_refused,
    scaler_limits.scaler_options_at_their_limits_accepted,
    scaler_limits.scaler_state_out_of_range_refused,
    scaler_limits.scaler_state_at_its_limits_loaded,
    training.training_matches_fp32,
    training.fabric_loop,
    trainer.trainer_backward_hooks,
    trainer.trainer_backward_gradients,
    trainer.trainer_closure_runs_once,
    trainer.trainer_step_applied,
    trainer.trainer_skips_step_without_loss,
    trainer.trainer_manual_optimization_steps,
    trainer.trainer_clips_after_closure,
    trainer.trainer_clip_gradients_by_norm,
    trainer.trainer_clip_gradients_by_value,
    trainer.trainer_step_contexts_see_updated_weights,
    trainer.trainer_fit,
    trainer.trainer_checkpoint_key,
    trainer.trainer_resume_restores_scaler_state,
    trainer.trainer_step_hooks,
    trainer.trainer_hooks_return_the_loss,
    trainer.trainer_manual_optimization_not_clipped,
    trainer.trainer_clips_by_value_through_the_hook,
    trainer.trainer_step_contexts_enter_forward_context,
    trainer.trainer_resume_refuses_scaler_state,
    trainer.trainer_evaluates_from_scaler_checkpoint,
    trainer.trainer_resume_finds_scaler_state,
    trainer.trainer_resume_without_scaler_state_warns,
    trainer.trainer_fused_optimizer_clipped,
    trainer_refusals.trainer_manual_fused_optimizer_unscaled,
    trainer_refusals.trainer_resume_refuses_unreadable_scaler_state,
    trainer_refusals.trainer_lbfgs_refused_before_closure,
    trainer_loop.trainer_nonfinite_step_skipped,
    trainer_loop.trainer_nonfinite_step_skipped_when_clipping,
    trainer_loop.trainer_optimizer_step_passes_arguments,
    trainer_loop.trainer_manual_closure_runs,
    trainer_loop.trainer_manual_optimizers_each_unscaled,
    trainer_loop.trainer_manual_overflow_updates_scale,
    trainer_loop.trainer_manual_clipping_sees_true_gradients,
    trainer_loop.trainer_skipped_batch_after_clipping_leaves_the_next_step_ready,
    trainer_loop.trainer_gradient_accumulation,
    trainer_loop.trainer_connect_keeps_optimizers_and_schedulers,
    trainer_loop.trainer_hooks_leave_torch_flags,
    trainer_loop.trainer_teardown_keeps_state,
    trainer_loop.trainer_eval_step_contexts_without_grad,
    trainer_loop.trainer_convert_input,
    conversion.converts_eligible_layers,
    conversion.conversion_leaves_other_layers,
    conversion.converted_matmul_dtype,
    conversion.converted_training_matches_fp32,
    conversion.converted_state_dict_matches_plain,
    conversion.conversion_idempotent,
    conversion.fabric_setup_converts,
    conversion.trainer_converts,
    flags.torch_flags_restored,
    teardown.teardown_restores_another_default_dtype,
    nesting.nested_forward_context_restores_state,
    nesting.nested_init_contexts,
    threads.forward_context_thread_local,
    threads.forward_context_concurrent_threads,
    pickling.pickle_round_trip,
    identity.convert_module_in_place,
    subclasses.linear_subclasses_converted,
    options.option_trials_applied,
    float8.float8_format,
    fabric_loop.unscale_before_clipping_every_step,
    fabric_loop.overflow_while_clipping_skipped,
    fabric_loop.nonfinite_in_any_group_skipped,
    fabric_loop.gradients_kept_after_step,
    fabric_loop.optimizer_errors_propagate,
    fabric_loop.parameters_without_gradients_clipped,
    fabric_loop.main_params_follow_added_groups,
    fabric_loop.backward_hooks_keep_gradients,
    fabric_loop.backward_frees_the_graph,
    fabric_loop.state_dict_follows_the_scaler,
    fabric_loop.load_state_dict_leaves_caller_state,
    fabric_loop.scaler_defaults,
    fabric_loop.forward_context_without_grad,
    fabric_loop.forward_context_keeps_rng_state,
    fabric_loop.converted_module_keeps_its_forward,
    fabric_loop.parameter_dtype_of_every_layer,
    fabric_loop.convert_io_of_bare_collections,
    *fsdp.FSDP_CHECKS,
)
