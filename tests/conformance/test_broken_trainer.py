"""The Trainer's checks proven: Lightning's Trainer classes pass them, and each broken one fails exactly its checks.

Each defect is Lightning's own ``lightning.pytorch`` precision class (with mixprec's ``ScalerGuard``,
the control of :mod:`tests.conformance.backends`) with one method replaced, installed as a real
distribution and run through the suite for the Trainer's objects only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, Report, run
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site, site_on_path

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")


@dataclass(frozen=True)
class Defect:
    name: str
    precision: str
    fails: frozenset[str]
    methods: str


def _defect(name: str, precision: str, fails: str, methods: str) -> Defect:
    return Defect(name, precision, frozenset(fails.split()), methods)


DEFECTS = [
    _defect(
        "pre-backward-skips-on-before-backward",
        "bf16-mixed",
        "trainer_backward_hooks trainer_step_hooks",
        """
        def pre_backward(self, tensor, module):
            return self.scaler.scale(tensor) if self.scaler is not None else tensor  # "the hooks are the loop's"
        """,
    ),
    _defect(
        "post-backward-skips-on-after-backward",
        "16-mixed",
        "trainer_backward_hooks trainer_step_hooks",
        """
        def post_backward(self, tensor, module):
            return tensor.detach()
        """,
    ),
    _defect(
        "backward-of-twice-the-loss",
        "bf16-mixed",
        "trainer_backward_gradients trainer_clips_by_value_through_the_hook trainer_manual_optimization_not_clipped "
        "trainer_manual_optimization_steps trainer_step_applied trainer_step_hooks "
        "trainer_gradient_accumulation trainer_manual_closure_runs trainer_manual_optimizers_each_unscaled"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def backward(self, tensor, model, optimizer, *args, **kwargs):
            model.backward(tensor * 2, *args, **kwargs)  # "a sum over two halves"
        """,
    ),
    _defect(
        "closure-run-twice",
        "bf16-mixed",
        "trainer_clips_after_closure trainer_closure_runs_once trainer_step_hooks "
        "trainer_gradient_accumulation trainer_manual_closure_runs"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            closure()  # "warm up"
            return super().optimizer_step(optimizer, model, closure, **kwargs)
        """,
    ),
    _defect(
        "no-clipping-after-the-closure",
        "16-mixed",
        "trainer_clips_after_closure trainer_clips_by_value_through_the_hook "
        "trainer_fused_optimizer_clipped trainer_step_hooks trainer_manual_fused_optimizer_unscaled"
        " trainer_manual_optimizers_each_unscaled"
        " trainer_skipped_batch_after_clipping_leaves_the_next_step_ready trainer_manual_clipping_sees_true_gradients",
        """
        def _after_closure(self, model, optimizer):
            pass
        """,
    ),
    _defect(
        "steps-when-training-step-returned-none",
        "16-mixed",
        "trainer_skips_step_without_loss trainer_lbfgs_refused_before_closure"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            closure()
            self.scaler.unscale_(optimizer)
            self._after_closure(model, optimizer)
            step = self.scaler.step(optimizer, **kwargs)
            self.scaler.update()
            return step
        """,
    ),
    _defect(
        "drops-steps-under-manual-optimization",
        "16-mixed",
        "trainer_manual_optimization_not_clipped trainer_manual_optimization_steps"
        " trainer_manual_fused_optimizer_unscaled trainer_lbfgs_refused_before_closure"
        " trainer_manual_optimizers_each_unscaled trainer_manual_overflow_updates_scale"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            if closure() is None:  # "nothing to step": also every manual step
                return None
            self.scaler.unscale_(optimizer)
            self._after_closure(model, optimizer)
            step = self.scaler.step(optimizer, **kwargs)
            self.scaler.update()
            return step
        """,
    ),
    _defect(
        "clip-by-value-ignored",
        "bf16-mixed",
        "trainer_clip_gradients_by_value trainer_clips_by_value_through_the_hook"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=None):
            if clip_val > 0:
                self.clip_grad_by_norm(optimizer, clip_val)  # "norm is what everybody uses"
        """,
    ),
    _defect(
        "clips-the-first-parameter-group-only",
        "bf16-mixed",
        "trainer_clip_gradients_by_norm trainer_clip_gradients_by_value "
        "trainer_clips_after_closure trainer_clips_by_value_through_the_hook"
        " trainer_manual_clipping_sees_true_gradients",
        """
        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=None):
            if clip_val <= 0:
                return
            params = optimizer.param_groups[0]["params"]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, clip_val)
        """,
    ),
    _defect(
        "state-under-another-key",
        "16-mixed",
        "trainer_checkpoint_key trainer_resume_restores_scaler_state",
        """
        __qualname__ = "AmpPrecision"  # the Trainer files the scale under it; Lightning's plugin never finds it
        """,
    ),
    _defect(
        "scaler-state-dropped-on-resume",
        "16-mixed",
        "trainer_resume_finds_scaler_state "
        "trainer_resume_restores_scaler_state trainer_resume_without_scaler_state_warns",
        """
        def on_load_checkpoint(self, checkpoint):
            checkpoint.pop("MixedPrecision", None)  # "start every resumed run with a fresh scale"
        """,
    ),
    _defect(
        "autocast-cache-left-on",
        "bf16-mixed",
        "trainer_step_contexts_see_updated_weights",
        """
        def autocast_context_manager(self):
            return torch.autocast(self.device, dtype=torch.bfloat16)  # cache_enabled left at its default
        """,
    ),
    _defect(
        "drops-the-optimizers",
        "bf16-mixed",
        "trainer_evaluates_from_scaler_checkpoint trainer_fit",
        """
        def connect(self, model, optimizers, lr_schedulers):
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = 0.0  # "warm-up handled elsewhere"
            return model, optimizers, lr_schedulers
        """,
    ),
    _defect(
        "callbacks-not-called-before-backward",
        "bf16-mixed",
        "trainer_step_hooks",
        """
        def pre_backward(self, tensor, module):
            from lightning.pytorch.trainer import call

            call._call_lightning_module_hook(module.trainer, "on_before_backward", tensor)  # "callbacks see the loss"
            return tensor
        """,
    ),
    _defect(
        "post-backward-returns-nothing",
        "16-mixed",
        "trainer_hooks_return_the_loss",
        """
        def post_backward(self, tensor, module):
            super().post_backward(tensor, module)  # "the loop keeps its own loss"
        """,
    ),
    _defect(
        "manual-optimization-clipped",
        "bf16-mixed",
        "trainer_manual_optimization_not_clipped",
        """
        def _clip_gradients(self, model, optimizer, clip_val=None, gradient_clip_algorithm=None):
            from lightning.pytorch.trainer import call

            call._call_lightning_module_hook(  # "clip in every mode"
                model.trainer,
                "configure_gradient_clipping",
                optimizer,
                gradient_clip_val=clip_val,
                gradient_clip_algorithm=gradient_clip_algorithm,
            )
        """,
    ),
    _defect(
        "clipping-hook-without-the-algorithm",
        "16-mixed",
        "trainer_clips_by_value_through_the_hook",
        """
        def _after_closure(self, model, optimizer):
            from lightning.pytorch.trainer import call

            trainer = model.trainer
            call._call_callback_hooks(trainer, "on_before_optimizer_step", optimizer)
            call._call_lightning_module_hook(trainer, "on_before_optimizer_step", optimizer)
            self._clip_gradients(model, optimizer, trainer.gradient_clip_val)  # "norm is the default"
        """,
    ),
    _defect(
        "validation-step-without-autocast",
        "bf16-mixed",
        "trainer_step_contexts_enter_forward_context trainer_eval_step_contexts_without_grad",
        """
        @contextlib.contextmanager
        def val_step_context(self):
            yield  # "no gradients in validation, so no autocast needed"
        """,
    ),
    _defect(
        "resume-ignores-scaler-state",
        "bf16-true",
        "trainer_resume_refuses_scaler_state trainer_resume_refuses_unreadable_scaler_state",
        """
        def on_load_checkpoint(self, checkpoint):
            pass  # "a precision without a scaler has nothing to restore"
        """,
    ),
    _defect(
        "refuses-scaler-state-when-evaluating",
        "32-true",
        "trainer_evaluates_from_scaler_checkpoint",
        """
        def connect(self, model, optimizers, lr_schedulers):
            return model, optimizers, lr_schedulers  # "every run may resume"
        """,
    ),
    _defect(
        "scaler-state-only-under-its-own-key",
        "16-mixed",
        "trainer_resume_finds_scaler_state",
        """
        def on_load_checkpoint(self, checkpoint):
            if "FSDPPrecision" not in checkpoint:  # "FSDP checkpoints are for FSDP runs"
                super().on_load_checkpoint(checkpoint)
        """,
    ),
    _defect(
        "fresh-scale-in-silence",
        "16-mixed",
        "trainer_resume_without_scaler_state_warns",
        """
        def on_load_checkpoint(self, checkpoint):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "the user knows"
                super().on_load_checkpoint(checkpoint)
        """,
    ),
    _defect(
        "fused-optimizer-clipped-scaled",
        "16-mixed",
        "trainer_fused_optimizer_clipped trainer_manual_fused_optimizer_unscaled"
        " trainer_manual_clipping_sees_true_gradients"
        " trainer_skipped_batch_after_clipping_leaves_the_next_step_ready",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            return trainer.MixedPrecision.optimizer_step(self, optimizer, model, closure, **kwargs)  # "Lightning's"
        """,
    ),
    _defect(
        "refusal-without-how-to-resume",
        "bf16-true",
        "trainer_resume_refuses_scaler_state trainer_resume_refuses_unreadable_scaler_state",
        """
        def on_load_checkpoint(self, checkpoint):
            from mixprec import StateDictError

            if self._fitting and {"MixedPrecision", "FSDPPrecision", "native_amp_scaling_state"} & set(checkpoint):
                raise StateDictError("this checkpoint cannot be resumed here")
        """,
    ),
    _defect(
        "manual-fused-optimizer-left-scaled",
        "16-mixed",
        "trainer_manual_fused_optimizer_unscaled trainer_manual_clipping_sees_true_gradients",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            if model.automatic_optimization:
                return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
            # "manual optimization unscales nothing by hand": skips TrainerGuard's unscaling of fused gradients
            return super(TrainerGuard, self).optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        """,
    ),
    _defect(
        "unreadable-scaler-state-crashes-the-resume",
        "bf16-true",
        "trainer_resume_refuses_unreadable_scaler_state",
        """
        def on_load_checkpoint(self, checkpoint):
            state = checkpoint.get("MixedPrecision")
            if self._fitting and state is not None:
                state.get("scale")  # "GradScaler state is a dict"
            super().on_load_checkpoint(checkpoint)
        """,
    ),
    _defect(
        "lbfgs-refused-after-its-closure",
        "16-mixed",
        "trainer_lbfgs_refused_before_closure",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            if isinstance(optimizer, torch.optim.LBFGS):
                closure()  # "one evaluation, then Lightning's refusal"
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        """,
    ),
]

TRAINER_MODULES = ("mixprec.testing._checks_trainer", "mixprec.testing._checks_trainer_refusals")
TRAINER_CHECKS = [c.name for c in CHECKS if c.function.__module__ in TRAINER_MODULES]


class Reports:
    """Each broken backend installed once and its Trainer cases run once, on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str, policy: str, precision: str) -> Report:
        if name not in self.runs:
            install(self.site, name, policy, precisions=(precision,))
            self.runs[name] = run(name, target="trainer")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-trainer"))) as site:
        yield Reports(site)


def test_every_trainer_check_is_proven_by_a_broken_backend_that_fails_it() -> None:
    # trainer_converts, a module-conversion check, is proven in test_broken_conversion.py.
    proven = {check for d in DEFECTS for check in d.fails}
    assert [c for c in TRAINER_CHECKS if c not in proven] == []


def test_every_defect_names_checks_that_exist() -> None:
    names = {check.name for check in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "bf16-true", "64-true"])
def test_lightnings_trainer_classes_with_the_scaler_guard_pass_every_trainer_check(
    reports: Reports, precision: str
) -> None:
    report = reports.of(f"control-{precision}", broken_policy(), precision)
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)
    assert {r.target for r in report.results} == {"trainer"}


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_trainer_class_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    report = reports.of(f"broken-{defect.name}", broken_policy(trainer_methods=defect.methods), defect.precision)
    assert {r.check for r in report.failures} == defect.fails, str(report)
