"""The checks of the Trainer's object beyond one clean step, proven: each broken Trainer class fails exactly its checks.

Each defect is Lightning's own ``lightning.pytorch`` precision class with mixprec's guard (the control
of :mod:`tests.conformance.backends`, which passes every Trainer check) with one method replaced, as a
backend author could plausibly ship it, installed as a real distribution and run through the suite
for the Trainer's objects only.
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
        "steps-past-the-grad-scaler",
        "16-mixed",
        "trainer_nonfinite_step_skipped trainer_nonfinite_step_skipped_when_clipping"
        " trainer_manual_clipping_sees_true_gradients trainer_lbfgs_refused_before_closure",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            result = closure()
            if result is None and model.automatic_optimization:
                return None
            self.scaler.unscale_(optimizer)
            self._after_closure(model, optimizer)
            step = optimizer.step(**kwargs)  # "unscaled already: step it directly"
            self.scaler.update()
            return step
        """,
    ),
    _defect(
        "clipping-raises-on-an-overflow",
        "16-mixed",
        "trainer_nonfinite_step_skipped_when_clipping",
        """
        def clip_grad_by_norm(self, optimizer, clip_val):
            torch.nn.utils.clip_grad_norm_(self.main_params(optimizer), clip_val, error_if_nonfinite=True)
        """,
    ),
    _defect(
        "clips-scaled-gradients-under-manual-optimization",
        "16-mixed",
        "trainer_manual_clipping_sees_true_gradients",
        """
        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm="norm"):
            # Lightning's clipping as it is: under manual optimization the gradients are still scaled here.
            trainer.Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)
        """,
    ),
    _defect(
        "keeps-clippings-unscaling-after-a-skipped-batch",
        "16-mixed",
        "trainer_skipped_batch_after_clipping_leaves_the_next_step_ready",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            from torch.amp.grad_scaler import OptState

            from mixprec._fabric import _stage
            from mixprec._trainer import _step_unscaled, _unscaling_fused

            if self.scaler is not None and _stage(self.scaler, optimizer) is OptState.UNSCALED:
                return _step_unscaled(self, optimizer, model, closure, kwargs)
            closure = _unscaling_fused(self, optimizer, model, closure)
            # "no step, no update: nothing to reset" -- the unscaling clip_gradients did stays recorded
            return self._lightning_step(optimizer, model, closure, kwargs)
        """,
    ),
    _defect(
        "drops-the-step-arguments",
        "bf16-mixed",
        "trainer_optimizer_step_passes_arguments",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            return super().optimizer_step(optimizer, model=model, closure=closure)
        """,
    ),
    _defect(
        "ignores-the-users-closure-under-manual-optimization",
        "16-mixed",
        "trainer_manual_closure_runs trainer_manual_clipping_sees_true_gradients",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            if not model.automatic_optimization:
                closure = lambda: None  # "under manual optimization the user ran backward already"
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        """,
    ),
    _defect(
        "unscales-the-first-optimizer",
        "16-mixed",
        "trainer_manual_optimizers_each_unscaled trainer_manual_clipping_sees_true_gradients"
        " trainer_lbfgs_refused_before_closure",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            result = closure()
            if result is None and model.automatic_optimization:
                return None
            self.scaler.unscale_(model.trainer.optimizers[0])  # "the optimizer"
            self._after_closure(model, optimizer)
            step = self.scaler.step(optimizer, **kwargs)
            self.scaler.update()
            return step
        """,
    ),
    _defect(
        "no-scale-update-under-manual-optimization",
        "16-mixed",
        "trainer_manual_overflow_updates_scale trainer_manual_clipping_sees_true_gradients"
        " trainer_lbfgs_refused_before_closure",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            result = closure()
            if result is None and model.automatic_optimization:
                return None
            self.scaler.unscale_(optimizer)
            self._after_closure(model, optimizer)
            step = self.scaler.step(optimizer, **kwargs)
            if model.automatic_optimization:  # "the loop updates the scale"
                self.scaler.update()
            return step
        """,
    ),
    _defect(
        "zeroes-the-gradients-before-the-closure",
        "bf16-mixed",
        "trainer_gradient_accumulation",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            if model.automatic_optimization:
                optimizer.zero_grad()  # "fresh gradients for every step"
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        """,
    ),
    _defect(
        "divides-the-loss-by-the-accumulation-again",
        "16-mixed",
        "trainer_gradient_accumulation",
        """
        def pre_backward(self, tensor, module):
            return super().pre_backward(tensor / module.trainer.accumulate_grad_batches, module)
        """,
    ),
    _defect(
        "connect-drops-the-lr-schedulers",
        "bf16-mixed",
        "trainer_connect_keeps_optimizers_and_schedulers",
        """
        def connect(self, model, optimizers, lr_schedulers):
            model, optimizers, _ = super().connect(model, optimizers, lr_schedulers)
            return model, optimizers, []
        """,
    ),
    _defect(
        "connect-lowers-the-float32-matmul-precision",
        "bf16-true",
        "trainer_hooks_leave_torch_flags",
        """
        def connect(self, model, optimizers, lr_schedulers):
            torch.set_float32_matmul_precision("medium")  # "faster matmuls for the whole run"
            return super().connect(model, optimizers, lr_schedulers)
        """,
    ),
    _defect(
        "teardown-resets-the-grad-scaler",
        "16-mixed",
        "trainer_teardown_keeps_state",
        """
        def teardown(self):
            super().teardown()
            self.scaler = torch.amp.GradScaler(self.device)  # "free the run's state"
        """,
    ),
    _defect(
        "autocast-only-with-grad",
        "bf16-mixed",
        "trainer_eval_step_contexts_without_grad forward_context_without_grad",
        """
        def forward_context(self):
            # "evaluation needs no mixed precision"
            grad = torch.is_grad_enabled()
            return torch.autocast(self.device, dtype=torch.bfloat16, cache_enabled=False, enabled=grad)
        """,
    ),
    _defect(
        "convert-input-casts-the-labels",
        "bf16-true",
        "trainer_convert_input",
        """
        def convert_input(self, data):
            return apply_to_collection(data, torch.Tensor, lambda tensor: tensor.to(torch.bfloat16))
        """,
    ),
]

LOOP_CHECKS = [c.name for c in CHECKS if c.function.__module__ == "mixprec.testing._checks_trainer_loop"]


class Reports:
    """Each broken backend installed once and its Trainer cases run once, on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str, policy: str, precision: str) -> Report:
        if name not in self.runs:
            install(self.site, name, policy, precisions=(precision,), targets=("trainer",))
            self.runs[name] = run(name, target="trainer")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-trainer-loop"))) as site:
        yield Reports(site)


def test_every_check_of_the_trainers_loop_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {check for d in DEFECTS for check in d.fails}
    assert [c for c in LOOP_CHECKS if c not in proven] == []


def test_every_defect_names_checks_that_exist() -> None:
    names = {check.name for check in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_trainer_class_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    report = reports.of(f"loop-{defect.name}", broken_policy(trainer_methods=defect.methods), defect.precision)
    assert {r.check for r in report.failures} == defect.fails, str(report)
