"""The conformance suite: the checks every mixprec backend, ours and third parties', must pass.

Passing it is the promise a backend makes to users: for every precision it offers, its objects do
what the precision's contract says and what Lightning's ``Precision`` interface promises, method by
method (listed below, each promise with its check). It runs against one
installed backend, on one device, for every precision the backend offers there, and is used in two
forms that run the very same cases:

- ``mixprec check NAME [--device D] [--precision P] [--target T] [--strategy S] [--json] [-o FILE]
  [--junit-xml FILE]``: a readable report (or JSON, or JUnit XML for CI); exit status 1 if a check failed, 2 if
  the backend, device, precision, target or strategy is refused, 0 otherwise (also when every check was skipped,
  which the report says plainly).
- From the backend's own pytest run, by subclassing :class:`ConformanceTests`::

      from mixprec.testing import ConformanceTests

      class TestConformance(ConformanceTests):
          backend = "mine"

Every offered precision has a contract (:class:`Contract`): the core's for the standard precisions
(:data:`STANDARD_CONTRACTS`), the backend's own for any other
(``Backend(..., contracts={"my-precision": Contract(...)})``). A precision without one fails
``contract_declared``, and nothing else is run for it: nothing is passed unverified.

A check is skipped, with the reason, never passed, when the device is absent (the backend's policy
counts no such device: ``device_count()``; for the core's every-device backend, the backends
installed for the device type, or else torch's device module, count them), when the backend's policy
says the precision cannot run there, or when the backend declares the check's optional capability
unsupported: ``Backend(..., unsupported={"fused_optimizers": "why"})`` for all its precisions, or
``Contract(..., unsupported=...)`` for one, with the names in :data:`CAPABILITIES`. A capability
neither declares unsupported is required.

Every precision is checked twice: the object ``get_precision`` builds for Fabric, and the one it
builds for the Trainer (``target="trainer"``), each against the same contract and against what its
own interface promises. A case's id says which: ``bf16-mixed:forward_dtype`` for Fabric's object,
``trainer/bf16-mixed:forward_dtype`` for the Trainer's (``--target`` runs one of them). A backend
that builds objects for one target only says so, ``Backend(..., targets=("fabric",))``, and the
other target's cases are skipped with that reason.

The objects for a strategy family are checked too: for ``strategy="fsdp"``, the ``FSDPPrecision``
for Fabric (ids ``fsdp/bf16-mixed:forward_dtype``) and for the Trainer
(``trainer-fsdp/bf16-mixed:forward_dtype``), against every check but a few that Lightning's FSDP
classes do not promise (``mixprec.testing._checks_fsdp.NOT_SHARED`` lists them with the reasons),
plus the FSDP checks listed below; ``--strategy fsdp`` runs those alone, ``--strategy none`` the
others. Their cases run in the process group that exists (under ``torchrun``), or else in a
one-process "gloo" group the suite starts for each case and destroys after it. A backend that
builds no FSDP objects says so, ``Backend(..., strategy_families=())``; it, and a device whose
tensors no process group here can reduce, get no FSDP cases, and the report names the family
skipped with the reason (``Report.skipped_strategies``).

A backend that knowingly fails a check lists it with the reason,
``Backend(..., expected_failed_checks={"check_name": "why"})``: its cases are reported as expected
failures (``xfailed``, with the reason; pytest's strict ``xfail``) and, strictly, a listed check that
passes fails ("unexpectedly passed"), so the list stays true. A name that is no check is refused.

:data:`CHECKS` lists the checks, each named after the behaviour it tests. Library use:
``mixprec.testing.run("cpu")`` returns a :class:`Report`; :class:`Suite` gives the cases before
running them. Importing this package imports torch and lightning.

What is checked
---------------

A precision's :class:`Contract` fixes its numbers: the dtype it computes in (``compute_dtype``), its
parameters' dtype (``parameter_dtype``), whether ``forward_context()`` autocasts (``autocast``),
whether a GradScaler scales the loss (``loss_scaling``), whether inputs and outputs are cast
(``converts_io``), how close to float32 it trains (``rtol``) and which optional capabilities it lacks
(``unsupported``). The suite reads the same fields from a standard contract and a declared one, so
a declared contract is checked exactly like a standard one.

What follows is what every object promises on top of its numbers, read from Lightning's
``Precision`` (its docstrings and what ``MixedPrecision``, ``HalfPrecision`` and ``DoublePrecision``
do), ``torch.autocast`` and ``torch.amp.GradScaler``. Each promise is one named check. The object,
its contexts, ``convert_module``, ``main_params`` and ``state_dict``/``load_state_dict`` (but
``state_dict_is_a_snapshot``) hold for the Trainer's object too, its steps taken as the Trainer
takes them; ``convert_input``/``convert_output``, ``backward``, ``optimizer_step``,
``unscale_gradients`` and the Fabric loop are Fabric's interface, and the Trainer's own is listed
after them.

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
    - makes new floating tensors in the contract's parameter dtype (the default dtype inside it;
      float32 under autocast) (``forward_context_default_dtype``);

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
      with one, refuses LBFGS as Lightning does, before running its closure (``lbfgs_rejected_with_scaler``),
      and runs another closure itself, once and with grad enabled (even under ``torch.no_grad()``), then
      steps through the scaler and returns the closure's loss (``scaled_step_runs_closure``); a closure that
      raises reaches the caller and leaves the GradScaler ready for the next step
      (``closure_that_raises_leaves_the_scaler_ready``);
    - steps a fused optimizer like the unfused one (``fused_optimizers``, optional).

``unscale_gradients(optimizer)``, before clipping
    - with a GradScaler, unscales once, so that clipping sees the true gradients of every parameter
      group and the step applies the clipped ones (``unscale_before_clipping``); for an optimizer
      that unscales inside its own ``step()`` (``fused=True``) too, whose step after clipping is then
      bit for bit the unfused one's (``fused_clipping_with_scaler_matches_unfused``, optional);
    - without one, changes nothing (``unscale_gradients_without_scaler``), whatever the optimizer
      (``fused_clipping_without_scaler``);
    - with a GradScaler, where torch's GradScaler cannot unscale (a second time before the step, or after
      ``scaler.step(optimizer)`` before ``scaler.update()``), raises ``mixprec.UnscalingError`` saying
      what to do, the gradients untouched (``unscaling_refused_where_torch_cannot``).

``main_params(optimizer)``
    - yields every parameter of every parameter group, once, in order (``main_params_cover_every_group``).

``state_dict()``, ``load_state_dict(state_dict)``
    - ``state_dict()`` is a dict holding the GradScaler's whole state at its top level with torch's own
      types and values (a float scale, an int growth tracker, ...), compared key by key by type and value,
      never by the truth of a comparison with a 0-dim tensor, and a ``"mixprec"`` entry whose manifest
      names the precision and the backend (``state_dict_complete``); no GradScaler state without a
      scaler, only the ``"mixprec"`` entry; complete before the first step too
      (``state_dict_before_first_step``); a value, not a view: it does not change as training goes on
      (``state_dict_is_a_snapshot``);
    - it survives ``torch.save`` and ``torch.load(weights_only=True)`` (``state_dict_torch_save``);
    - ``load_state_dict()`` of it restores the whole state in a new object (``load_state_dict_restores``);
    - a state that does not fit (GradScaler state for a precision without one, an empty or partial
      state for one with one, not a dict) is refused with ``mixprec.StateDictError`` and changes
      nothing (``incompatible_state_dict``); a state without the ``"mixprec"`` entry, as older
      checkpoints and Lightning's own plugins save it, loads (``state_dict_without_mixprec_entry_loads``).
      Lightning's classes ignore a state that does not fit in silence:
      build the object through ``mixprec.precision.mixed_precision()`` (or ``standard_precision()``)
      or subclass ``mixprec.precision.AutocastPrecision``, or put the ``mixprec.precision.ScalerGuard``
      mixin first among a Lightning class's bases.

``telemetry``
    - counts the optimizer steps, the steps the GradScaler skipped for inf/NaN gradients, the run of
      skips and the step of the last one, and reports the scale, None without a scaler
      (``telemetry_counts_steps``); its counters come back from a state's ``"mixprec"`` entry
      (``telemetry_restored_by_load_state_dict``);
    - with ``collapse_after=N, on_collapse="raise"``, the N-th skipped step in a row raises
      ``mixprec.CollapseError`` (``collapse_detected``).

    Objects built through mixprec's builders, or with ``mixprec.precision.ScalerGuard`` among their
    bases, get all of it; an ``optimizer_step`` or ``load_state_dict`` of their own must end in the mixin's.

The GradScaler's limits (its scale is a float32 tensor, its growth tracker an int32 one)
    - options it cannot keep (an inf, NaN, zero or float32-overflowing ``init_scale``, a
      ``growth_factor`` that rounds to 1, a ``backoff_factor`` outside (0, 1), a ``growth_interval``
      outside 1 to 2**31 - 1 or not an int, an ``init_scale`` one backoff takes below the smallest
      normal float32) are refused with ``mixprec.OptionError`` (``scaler_options_out_of_range_refused``);
    - options at the limits, the bounds included, are kept as the float or int torch keeps them,
      ints given for floats too (``scaler_options_at_their_limits_accepted``);
    - ``load_state_dict()`` refuses state holding such a value with ``mixprec.StateDictError`` and
      changes nothing (``scaler_state_out_of_range_refused``), and loads state at the limits
      (``scaler_state_at_its_limits_loaded``). ``mixprec.precision.make_scaler(request)`` builds such
      a scaler and ``ScalerGuard`` loads such state.

``teardown()``
    - leaves torch's global state as it was before the object was made (``teardown_restores_state``).

``pre_backward()``, ``post_backward()``
    - hooks with no promise of their own; Fabric calls them around ``backward``, and ``fabric_loop`` runs them.

A Fabric loop, over several calls (``_checks_fabric_loop``)
    - ``unscale_gradients()`` gives the true gradients at every step, not only the first
      (``unscale_before_clipping_every_step``); a step that overflowed is skipped after clipping with
      ``error_if_nonfinite=False`` too, and the scale backs off (``overflow_while_clipping_skipped``); an
      inf or NaN in any parameter group skips the step (``nonfinite_in_any_group_skipped``);
    - ``optimizer_step()`` leaves the gradients in place (``gradients_kept_after_step``) and lets the
      optimizer's exceptions propagate (``optimizer_errors_propagate``); unscaling, clipping and the step
      work with a parameter that has no gradient (``parameters_without_gradients_clipped``);
    - ``main_params()`` follows groups added with ``optimizer.add_param_group`` after an earlier call
      (``main_params_follow_added_groups``);
    - Fabric's backward (``pre_backward``, ``backward``, ``post_backward``) accumulates gradients
      (``backward_hooks_keep_gradients``), and ``backward()`` without arguments frees the graph
      (``backward_frees_the_graph``);
    - ``state_dict()`` holds the scale as it is at each call (``state_dict_follows_the_scaler``);
      ``load_state_dict(state)`` leaves the caller's dict as it was (``load_state_dict_leaves_caller_state``);
      without options the GradScaler has torch's defaults (``scaler_defaults``);
    - under ``torch.no_grad()`` ``forward_context()`` computes in the same dtype, without inference mode or
      a graph (``forward_context_without_grad``); the contexts leave torch's random number generator
      alone (``forward_context_keeps_rng_state``);
    - ``convert_module()`` does not change how the module computes outside ``forward_context()``
      (``converted_module_keeps_its_forward``) and gives every layer's parameters ``parameter_dtype``,
      ``nn.Embedding``, ``nn.LayerNorm`` and ``nn.Conv1d`` too (``parameter_dtype_of_every_layer``);
    - ``convert_input()``/``convert_output()`` convert a bare tensor, dataclass or namedtuple as a nested one,
      keeping its type
      (``convert_io_of_bare_collections``).

Training
    - a small model trained under the precision ends within the contract's ``rtol`` of the same model
      trained in float32 (``training_matches_fp32``), and ``Fabric(plugins=[p])`` trains with the
      object (``fabric_loop``).

The Trainer's object (``target="trainer"``: a ``lightning.pytorch`` ``Precision``), as the Trainer calls it
    - the strategy's backward (``pre_backward``, ``backward``, ``post_backward``) calls the
      LightningModule's ``on_before_backward`` then ``on_after_backward``, once each
      (``trainer_backward_hooks``), and leaves the loss's gradients, times the GradScaler's scale where
      there is one (``trainer_backward_gradients``);
    - ``optimizer_step(optimizer, model, closure)`` runs the closure once (``trainer_closure_runs_once``)
      and steps with the true, unscaled gradients in every parameter group (``trainer_step_applied``);
      takes no step, and leaves the scale, when ``training_step`` returned None
      (``trainer_skips_step_without_loss``); steps under manual optimization, whose closure returns None
      (``trainer_manual_optimization_steps``);
    - with ``gradient_clip_val``, clips after the closure and before the step, the true gradients, by
      norm over every parameter group (``trainer_clips_after_closure``); ``clip_gradients`` clips every
      parameter group by norm (``trainer_clip_gradients_by_norm``) and, for
      ``gradient_clip_algorithm="value"``, by value (``trainer_clip_gradients_by_value``);
    - its step contexts (``train_step_context``, ``val_step_context``, ``test_step_context``) keep no
      autocast cache, so a forward after an in-place weight update inside one sees the new weights
      (``trainer_step_contexts_see_updated_weights``);
    - ``Trainer(plugins=[p]).fit`` trains with it (``trainer_fit``); the checkpoint holds its
      ``state_dict()`` under the class's ``__qualname__``, which for a GradScaler is Lightning's own
      (``MixedPrecision``, ``FSDPPrecision``), so Lightning's plugin and the backend's resume each other's
      runs (``trainer_checkpoint_key``); and ``fit(ckpt_path=...)`` with a new object restores the
      GradScaler state, through ``on_load_checkpoint`` and ``load_state_dict``
      (``trainer_resume_restores_scaler_state``). One fit and one resume per precision serve these.
    - one automatic step calls the callbacks' and then the LightningModule's ``on_before_backward``,
      ``on_after_backward`` and ``on_before_optimizer_step`` (which sees the true, unscaled gradients),
      then ``configure_gradient_clipping``, then the step (``trainer_step_hooks``); the strategy's
      backward returns the loss detached, the closure the optimizer is given returns the Trainer's
      closure's loss, and ``optimizer_step`` returns the step's output (``trainer_hooks_return_the_loss``);
    - under manual optimization ``optimizer_step`` neither clips nor calls ``configure_gradient_clipping``
      (``trainer_manual_optimization_not_clipped``); with ``gradient_clip_algorithm="value"`` the hook
      gets the Trainer's value and algorithm and the step the gradients clamped
      (``trainer_clips_by_value_through_the_hook``);
    - ``train_step_context``, ``val_step_context``, ``test_step_context`` and ``predict_step_context``
      set what ``forward_context()`` sets (``trainer_step_contexts_enter_forward_context``);
    - resuming a fit from a checkpoint of another precision, as the Trainer's checkpoint connector
      restores it: GradScaler state (a "16-mixed" run's) into a precision without a GradScaler raises
      ``mixprec.StateDictError`` (``trainer_resume_refuses_scaler_state``), while validate, test and
      predict from such a checkpoint work (``trainer_evaluates_from_scaler_checkpoint``); with a
      GradScaler, state filed under any of Lightning's keys (``MixedPrecision``, ``FSDPPrecision``,
      ``native_amp_scaling_state``) is restored (``trainer_resume_finds_scaler_state``), and a checkpoint
      without any warns ``mixprec.PrecisionWarning`` and trains on with a fresh scale
      (``trainer_resume_without_scaler_state_warns``);
    - with a GradScaler and ``gradient_clip_val``, a fused optimizer (one that unscales in its own step)
      is clipped on its true gradients, seen so by ``on_before_optimizer_step`` too
      (``trainer_fused_optimizer_clipped``, optional: capability ``fused_optimizers``); under manual
      optimization too, its gradients are unscaled before ``on_before_optimizer_step``
      (``trainer_manual_fused_optimizer_unscaled``, optional: capability ``fused_optimizers``);
    - GradScaler state that is not a mapping (a damaged checkpoint), resumed into a precision without a
      GradScaler, is a ``mixprec.StateDictError`` too (``trainer_resume_refuses_unreadable_scaler_state``);
    - with a GradScaler, LBFGS is refused before its closure runs: no ``training_step``, backward or step
      (``trainer_lbfgs_refused_before_closure``);
    - with a GradScaler, a step whose gradients hold inf or NaN is skipped and the scale backs off
      (``trainer_nonfinite_step_skipped``), with ``gradient_clip_val`` too, where clipping an infinite
      norm must not raise (``trainer_nonfinite_step_skipped_when_clipping``); under manual optimization
      an overflowing step backs the scale off and the next one trains
      (``trainer_manual_overflow_updates_scale``); clipping with ``self.clip_gradients(opt, ...)`` between
      ``manual_backward`` and ``opt.step()`` clips the true gradients, and the step applies them clipped
      (``trainer_manual_clipping_sees_true_gradients``); with ``gradient_clip_val``, a batch whose
      ``training_step`` returned None leaves the GradScaler ready for the next step
      (``trainer_skipped_batch_after_clipping_leaves_the_next_step_ready``);
    - ``optimizer_step(optimizer, model, closure, **kwargs)`` passes ``kwargs`` on to ``optimizer.step``
      (``trainer_optimizer_step_passes_arguments``); under manual optimization a closure of the user's
      (``opt.step(closure=closure)``) runs once and its gradients are stepped
      (``trainer_manual_closure_runs``); with two optimizers each ``opt.step()`` unscales and steps the
      optimizer it is given, so ``on_before_optimizer_step`` sees its true gradients
      (``trainer_manual_optimizers_each_unscaled``);
    - with ``accumulate_grad_batches=2`` the step applies the gradients of both batches of the window:
      ``optimizer_step`` zeroes none and the loss is left as the loop divides it
      (``trainer_gradient_accumulation``);
    - ``connect(model, optimizers, lr_schedulers)`` returns the optimizers and every LR scheduler it
      was given (``trainer_connect_keeps_optimizers_and_schedulers``);
    - ``convert_module``, ``connect``, a step in ``train_step_context``, the other step contexts and
      ``teardown()`` leave torch's process-wide switches and global state (the float32 matmul
      precision included) as they were (``trainer_hooks_leave_torch_flags``);
    - ``teardown()``, which the Trainer calls at the end of a fit, keeps ``state_dict()``, so a
      checkpoint saved after ``fit`` (``trainer.save_checkpoint``) holds the scale the run reached
      (``trainer_teardown_keeps_state``);
    - ``val_step_context``, ``test_step_context`` and ``predict_step_context`` under
      ``torch.inference_mode()``, as the evaluation loops run them, set what ``train_step_context``
      sets with grad enabled (``trainer_eval_step_contexts_without_grad``);
    - ``convert_input``, which the Trainer calls on every batch, keeps the batch's structure, its
      integer and bool tensors and other values, and gives floating tensors the compute dtype (under
      autocast it may leave them as they are, as Lightning's ``MixedPrecision`` does)
      (``trainer_convert_input``).

The FSDP object (``strategy="fsdp"``), as Lightning's FSDP strategies use it
    - its ``mixed_precision_config`` keeps FSDP's parameters, gradient reductions and buffers in the
      contract's compute dtype (``fsdp_mixed_precision_config``);
    - ``convert_input`` casts floating inputs to the parameters' dtype (float32 for a mixed
      precision and "32-true"), ``convert_output`` floating outputs to the default dtype, whatever the
      precision (``fsdp_converts_io``, in place of ``convert_input``, ``convert_output`` and ``trainer_convert_input``);
    - building it warns nothing but mixprec's ``PrecisionWarning`` (``fsdp_built_without_warnings``);
    - the Trainer's clips by norm or refuses to with Lightning's ``MisconfigurationException`` (its
      FSDP strategy clips through the sharded module), never leaving the gradients unclipped in
      silence (``fsdp_norm_clipping_refused``);
    - a float64 precision, which FSDP does not train in, is refused with a ``PrecisionError`` that
      names it and FSDP (``fsdp_refuses_float64``);
    - with loss scaling, its scaler is a ``ShardedGradScaler`` built from the request's options
      (``fsdp_scaler_is_sharded``).

    Lightning runs FSDP on CUDA only, so no FSDP loop runs on the CPU.

The object as a whole
    - leaves torch's process-wide switches as they were through every context and ``teardown()``:
      cuDNN's benchmark and deterministic modes, the TF32 settings of cuDNN and oneDNN, the CUDA
      matmuls' reduced-precision reductions, the attention kernels, oneDNN, opt_einsum, the MHA fast
      path and flush-denormal (``torch_flags_restored``);
    - torn down from float64 or float16 as torch's default dtype, leaves that default as it was
      (``teardown_restores_another_default_dtype``);
    - nests its contexts: once the outer of two nested ``forward_context()``s exits, the state is as
      before it (``nested_forward_context_restores_state``); ``module_init_context()`` and
      ``tensor_init_context()`` nest in each other and in themselves (``nested_init_contexts``);
    - keeps what ``forward_context()`` changes in the thread that entered it
      (``forward_context_thread_local``), and serves two threads in its ``forward_context()`` at once,
      each as one thread alone (``forward_context_concurrent_threads``);
    - pickles, as ``ddp_spawn`` needs, with its GradScaler's state, into a copy that computes and steps
      as it does (``pickle_round_trip``);
    - converts a module in place: ``convert_module`` returns the module it is given with the same
      parameters, and the same again when converting it twice (``convert_module_in_place``), and
      handles a subclass of ``nn.Linear`` as an ``nn.Linear``, keeping its own ``forward``
      (``linear_subclasses_converted``);
    - takes the option values its contract names (``Contract.option_trials``), with the effect the
      contract says (``option_trials_applied``).

Steps are compared weight by weight with the exact SGD step (``w - lr * g`` in float64), within one
unit in the last place of the parameters' dtype: rounding to nearest or stochastically, with any
seed, stays within it; a wrong learning rate, parameter group or scale does not
(``mixprec/testing/_rounding.py``).

A contract whose ``converts_modules`` is not empty is also held to the module-conversion checks
(which layers are converted, that the converted model trains and keeps the plain model's
``state_dict``, that Fabric and the Trainer apply it), written down in ``mixprec/testing/_conversion.py``;
for a float8 ``matmul_dtype``, its forward uses no other float8 dtype (``float8_format``).
"""

from __future__ import annotations

from mixprec._contract import STANDARD_CONTRACTS, Contract
from mixprec.testing._base import Check, CheckFailed, CheckSkipped, Subject
from mixprec.testing._checks import CHECKS
from mixprec.testing._contract import CAPABILITIES
from mixprec.testing._pytest import ConformanceTests
from mixprec.testing._suite import Case, Outcome, Report, Result, Suite, run

__all__ = [
    "CAPABILITIES",
    "CHECKS",
    "STANDARD_CONTRACTS",
    "Case",
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "ConformanceTests",
    "Contract",
    "Outcome",
    "Report",
    "Result",
    "Subject",
    "Suite",
    "run",
]
