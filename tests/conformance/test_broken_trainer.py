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
        "trainer_backward_hooks",
        """
        def pre_backward(self, tensor, module):
            return self.scaler.scale(tensor) if self.scaler is not None else tensor  # "the hooks are the loop's"
        """,
    ),
    _defect(
        "post-backward-skips-on-after-backward",
        "16-mixed",
        "trainer_backward_hooks",
        """
        def post_backward(self, tensor, module):
            return tensor.detach()
        """,
    ),
    _defect(
        "backward-of-twice-the-loss",
        "bf16-mixed",
        "trainer_backward_gradients trainer_step_applied trainer_manual_optimization_steps",
        """
        def backward(self, tensor, model, optimizer, *args, **kwargs):
            model.backward(tensor * 2, *args, **kwargs)  # "a sum over two halves"
        """,
    ),
    _defect(
        "closure-run-twice",
        "bf16-mixed",
        "trainer_closure_runs_once trainer_clips_after_closure",
        """
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            closure()  # "warm up"
            return super().optimizer_step(optimizer, model, closure, **kwargs)
        """,
    ),
    _defect(
        "no-clipping-after-the-closure",
        "16-mixed",
        "trainer_clips_after_closure",
        """
        def _after_closure(self, model, optimizer):
            pass
        """,
    ),
    _defect(
        "steps-when-training-step-returned-none",
        "16-mixed",
        "trainer_skips_step_without_loss",
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
        "trainer_manual_optimization_steps",
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
        "trainer_clip_gradients_by_value",
        """
        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=None):
            if clip_val > 0:
                self.clip_grad_by_norm(optimizer, clip_val)  # "norm is what everybody uses"
        """,
    ),
    _defect(
        "clips-the-first-parameter-group-only",
        "bf16-mixed",
        "trainer_clip_gradients_by_norm trainer_clip_gradients_by_value trainer_clips_after_closure",
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
        "trainer_checkpoint_key",
        """
        __qualname__ = "AmpPrecision"  # the Trainer files the scale under it; Lightning's plugin never finds it
        """,
    ),
    _defect(
        "scaler-state-dropped-on-resume",
        "16-mixed",
        "trainer_resume_restores_scaler_state",
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
        "trainer_fit",
        """
        def connect(self, model, optimizers, lr_schedulers):
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = 0.0  # "warm-up handled elsewhere"
            return model, optimizers, lr_schedulers
        """,
    ),
]

TRAINER_CHECKS = [c.name for c in CHECKS if c.function.__module__ == "mixprec.testing._checks_trainer"]


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
