"""The checks of promises beyond one call of one method, each proven by broken backends that fail exactly it.

Global switches outside autocast and dtypes, teardown from another default dtype, one object used
from two threads, nested init contexts and the state after nested forward contexts, pickling,
conversion in place, subclasses of ``nn.Linear``, the option values a contract names, the float8
format, the Trainer object's autocast dtype, and steps rounded stochastically. Each broken backend
is a control that passes every check (Lightning's classes with ``ScalerGuard``, mixprec-fp8's
classes, or the example's stochastic-rounding class) with one defect a real author could make,
installed as a real distribution through a real entry point and checked with the library call
``mixprec check`` makes.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightning.fabric.plugins.precision import Precision

from mixprec.testing import CHECKS, Report, Suite, run
from mixprec.testing._base import Subject
from mixprec.testing._checks_step import step_applied, unscale_gradients_without_scaler
from tests.conformance.backends import broken_policy, install
from tests.conformance.test_broken_conversion import conversion_policy
from tests.distributions import Site, site_on_path

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

#: The modules of the checks this file proves.
MODULES = (
    "_torch_flags",
    "_nesting",
    "_teardown",
    "_threads",
    "_pickling",
    "_identity",
    "_linear_subclasses",
    "_options",
    "_float8",
)

_SR_POLICY = """
import torch

from mixprec import Availability
from mixprec_sr.precision import StochasticRoundingPrecision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


class Broken(StochasticRoundingPrecision):
{methods}


def create(request):
    return Broken({seed})
"""


def sr_policy(methods: str, seed: str = "request.options.get('seed', 0)") -> str:
    """The example backend's stochastic-rounding "bf16-true" with ``methods`` (class-body source) in place of its own,
    built with the seed ``seed`` (source)."""
    return _SR_POLICY.format(methods=textwrap.indent(textwrap.dedent(methods).strip(), "    "), seed=seed)


@dataclass(frozen=True)
class Defect:
    """One broken backend: its policy, the precision it is checked for, and the checks it must fail."""

    name: str
    precision: str
    fails: frozenset[str]
    policy: str
    note: str = ""
    unsupported: Mapping[str, str] = field(default_factory=dict)
    targets: tuple[str, ...] = ("fabric", "trainer")


def _standard(name: str, precision: str, fails: str, methods: str = "pass", create: str = "", note: str = "") -> Defect:
    policy = broken_policy(methods, create) if create else broken_policy(methods)
    return Defect(name, precision, frozenset(fails.split()), policy, note)


def _fp8(name: str, fails: str, methods: str, note: str = "") -> Defect:
    return Defect(name, "fp8-mixed", frozenset(fails.split()), conversion_policy(methods), note)


def _sr(name: str, fails: str, methods: str, note: str = "") -> Defect:
    # As the example backend declares: its steps run on float32 copies of the weights, which LBFGS cannot.
    unsupported = {"lbfgs_closure": "each step runs on float32 copies of the weights"}
    # As the example backend declares: it builds objects for Fabric only.
    return Defect(name, "bf16-true", frozenset(fails.split()), sr_policy(methods), note, unsupported, ("fabric",))


DEFECTS = [
    # --- torch's process-wide switches
    _standard(
        "cudnn-benchmark-left-on",
        "bf16-mixed",
        "torch_flags_restored",
        """
        def forward_context(self):
            torch.backends.cudnn.benchmark = True  # "the fastest convolution algorithms"
            return super().forward_context()
        """,
    ),
    _standard(
        "denormals-flushed-for-good",
        "16-true",
        "torch_flags_restored",
        """
        def module_init_context(self):
            torch.set_flush_denormal(True)  # "denormals are slow on CPUs"
            return super().module_init_context()
        """,
    ),
    _standard(
        "cudnn-deterministic-left-on",
        "32-true",
        "torch_flags_restored",
        """
        def convert_module(self, module):
            torch.backends.cudnn.deterministic = True  # "reproducible runs"
            return super().convert_module(module)
        """,
        note="convert_module turns it on; teardown() must put back what the object changed",
    ),
    # --- teardown from another default dtype
    _standard(
        "teardown-sets-float32",
        "bf16-true",
        "teardown_restores_another_default_dtype",
        """
        def teardown(self):
            torch.set_default_dtype(torch.float32)  # "back to torch's default"
        """,
        note="where the suite runs the default is float32 already, so teardown_restores_state passes",
    ),
    # --- nesting
    _standard(
        "one-autocast-kept-on-the-object",
        "bf16-mixed",
        "nested_forward_context_restores_state",
        """
        def forward_context(self):
            if "_autocast" not in self.__dict__:
                self._autocast = torch.autocast(self.device, dtype=torch.bfloat16)  # "made once, not every step"
            return self._autocast
        """,
        note="the inner entry saves the outer one's state on the object, and the outer exit puts that back",
    ),
    _standard(
        "init-dtype-kept-on-the-object",
        "16-true",
        "nested_init_contexts",
        """
        @contextlib.contextmanager
        def module_init_context(self):
            self._previous = torch.get_default_dtype()  # the dtype to put back, on the object
            torch.set_default_dtype(self._desired_input_dtype)
            try:
                yield
            finally:
                torch.set_default_dtype(self._previous)
        """,
    ),
    # --- threads
    _standard(
        "linear-patched-for-the-process",
        "bf16-mixed",
        "forward_context_thread_local",
        """
        @contextlib.contextmanager
        def forward_context(self):
            import torch.nn.functional as F

            linear = F.linear
            if not getattr(linear, "lowered", False):  # "bfloat16 matmuls even where autocast misses them"

                def lowered(input, weight, bias=None):
                    low = [None if t is None else t.to(torch.bfloat16) for t in (input, weight, bias)]
                    return linear(*low)

                lowered.lowered = True
                F.linear = lowered
            try:
                with torch.autocast(self.device, dtype=torch.bfloat16):
                    yield
            finally:
                F.linear = linear
        """,
        note="every thread's nn.Linear computes in bfloat16 while one thread is inside",
    ),
    _standard(
        "depth-counted-on-the-object",
        "bf16-mixed",
        "forward_context_concurrent_threads",
        """
        @contextlib.contextmanager
        def forward_context(self):
            self._depth = self.__dict__.get("_depth", 0) + 1  # "enter autocast once, however deeply nested"
            try:
                if self._depth == 1:
                    with torch.autocast(self.device, dtype=torch.bfloat16):
                        yield
                else:
                    yield
            finally:
                self._depth -= 1
        """,
        note="the second thread in finds the depth at 1 and computes without autocast",
    ),
    # --- pickling
    _standard(
        "holds-a-lambda",
        "bf16-mixed",
        "pickle_round_trip",
        create="""
        obj = build(request)
        obj.cast = lambda tensor: tensor.to(torch.bfloat16)  # "a helper, kept at hand"
        return obj
        """,
    ),
    _standard(
        "scaler-rebuilt-when-unpickled",
        "16-mixed",
        "pickle_round_trip",
        """
        def __reduce__(self):  # "the object from its settings"
            return (type(self), (self.precision, self.device, torch.amp.GradScaler(self.device)))
        """,
        note="the copy starts from the initial scale, not the one training reached",
    ),
    # --- conversion in place, subclasses of nn.Linear
    _standard(
        "converts-a-copy",
        "16-true",
        "convert_module_in_place fabric_loop",
        """
        def convert_module(self, module):
            import copy

            return super().convert_module(copy.deepcopy(module))  # "leave the user's model as it is"
        """,
        note="the optimizer made before fabric.setup steps the old weights, so fabric_loop does not train either",
    ),
    _standard(
        "converts-torch-layers-only",
        "16-true",
        "linear_subclasses_converted",
        """
        def convert_module(self, module):
            for layer in module.modules():  # "layers torch ships; user-defined layers keep their own dtype"
                if type(layer).__module__.startswith("torch."):
                    dtype = self._desired_input_dtype
                    layer._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
            return module
        """,
    ),
    _fp8(
        "converts-linear-subclasses",
        "linear_subclasses_converted",
        """
        def convert_module(self, module):
            from mixprec_fp8._torchao import Float8Linear

            chosen = self.layers.module_filter

            def take(layer, name):  # every linear layer float8 takes, by isinstance, as torchao's own filter does
                eligible = layer.in_features % 16 == 0 and layer.out_features % 16 == 0
                return not isinstance(layer, Float8Linear) and eligible and (chosen is None or chosen(layer, name))

            return convert_to_float8_training(module, module_filter_fn=take, config=self.layers.config)
        """,
        note="torchao's Float8Linear replaces the subclass, whose own forward is lost",
    ),
    # --- option values the contract names
    _fp8(
        "module-filter-ignored",
        "option_trials_applied",
        """
        def __init__(self, device, recipe="tensorwise", module_filter=None):
            super().__init__(device, recipe)  # "module_filter: taken now, applied in a later release"
        """,
    ),
    # --- the float8 format
    _fp8(
        "float8-e5m2-forward",
        "float8_format",
        """
        def __init__(self, device, recipe="tensorwise", module_filter=None):
            import dataclasses

            super().__init__(device, recipe, module_filter)
            config = self.layers.config  # "e5m2's wider range, for activations and weights too"
            wide = {
                name: dataclasses.replace(getattr(config, name), target_dtype=torch.float8_e5m2)
                for name in (
                    "cast_config_input",
                    "cast_config_input_for_grad_weight",
                    "cast_config_weight",
                    "cast_config_weight_for_grad_input",
                )
            }
            self.layers.config = dataclasses.replace(config, **wide)
        """,
        note="float8_e5m2's rounding is within the bound converted_matmul_dtype allows float8_e4m3fn",
    ),
    # --- the Trainer object's autocast dtype
    _fp8(
        "trainer-autocasts-float16",
        "forward_dtype nested_forward_context converted_matmul_dtype",
        """
        def autocast_context_manager(self):  # Lightning's own choice for any precision string but "bf16-mixed"
            return torch.autocast(self.device, dtype=torch.float16, cache_enabled=False)
        """,
        note="the Fabric class has no autocast_context_manager: only the Trainer's object fails, computing in float16,"
        " which overflows at the conversion check's largest magnitude",
    ),
    # --- steps rounded stochastically, and wrong
    _sr(
        "sr-first-groups-learning-rate-everywhere",
        "step_applied unscale_gradients_without_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            lrs = [group["lr"] for group in optimizer.param_groups]
            for group in optimizer.param_groups:  # "one learning rate for the whole model"
                group["lr"] = lrs[0]
            try:
                return super().optimizer_step(optimizer, **kwargs)
            finally:
                for group, lr in zip(optimizer.param_groups, lrs):
                    group["lr"] = lr
        """,
        note="both checks step an optimizer with two parameter groups",
    ),
    _sr(
        "sr-step-nine-tenths",
        "step_applied unscale_gradients_without_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.mul_(0.9)  # "a little weight decay, folded into the gradient"
            return super().optimizer_step(optimizer, **kwargs)
        """,
        note="both checks step with two parameter groups; training ends within bfloat16's tolerance all the same",
    ),
]


class Reports:
    """Each broken backend installed once, its suite run once, on first use: the tests share the runs."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, defect: Defect) -> Report:
        name = f"promise-{defect.name}"
        if name not in self.runs:
            install(
                self.site,
                name,
                defect.policy,
                precisions=(defect.precision,),
                unsupported=defect.unsupported,
                targets=defect.targets,
            )
            self.runs[name] = run(name)
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-promises"))) as site:
        yield Reports(site)


def _failed(report: Report) -> set[str]:
    return {r.check for r in report.failures}


PROMISE_CHECKS = [c.name for c in CHECKS if c.function.__module__.rpartition(".")[2] in MODULES]


def test_every_defect_names_checks_that_exist() -> None:
    names = {check.name for check in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


def test_every_check_of_these_promises_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {check for d in DEFECTS for check in d.fails}
    assert len(PROMISE_CHECKS) == 11
    assert [c for c in [*PROMISE_CHECKS, "step_applied"] if c not in proven] == []


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_promise_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    assert _failed(reports.of(defect)) == defect.fails, str(reports.of(defect))


@pytest.mark.slow
def test_a_wrong_learning_rate_is_told_by_how_much_each_group_stepped(reports: Reports) -> None:
    (defect,) = [d for d in DEFECTS if d.name == "sr-first-groups-learning-rate-everywhere"]
    (failure,) = [r for r in reports.of(defect).failures if r.check == "step_applied"]
    ratios = re.search(r"group 1: ([\d.]+) times; group 2: ([\d.]+) times", failure.detail)
    assert ratios is not None, failure.detail
    assert [float(r) for r in ratios.groups()] == pytest.approx([1, 2], abs=0.05)
    assert "as rounding to torch.bfloat16 can take it" in failure.detail


_SEEDED = "Contract('bfloat16', parameter_dtype='bfloat16', option_trials=(OptionTrial({'seed': 1}),))"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "outcome"), [("request.options.get('seed', 0)", "passed"), ("0", "failed")], ids=["applied", "ignored"]
)
def test_an_option_trial_without_converts_fails_an_option_that_changes_nothing(
    reports: Reports, seed: str, outcome: str
) -> None:
    name = f"promise-seed-{outcome}"
    contracts = {"sr-bf16": _SEEDED}
    install(
        reports.site, name, sr_policy("pass", seed), precisions=("sr-bf16",), contracts=contracts, targets=("fabric",)
    )
    (case,) = [c for c in Suite(name, target="fabric").cases if c.check.name == "option_trials_applied"]
    result = case.run()
    assert result.outcome == outcome, result.detail
    if outcome == "failed":
        assert "built with seed=1 computes the very output, and takes the very step" in result.detail


class _Seeded(Subject):
    """The example backend's "bf16-true", its rounding noise seeded with ``seed``."""

    seed = 0

    def make(self, **options: Any) -> Precision:
        return super().make(seed=self.seed, **options)


@pytest.fixture(scope="module")
def stochastic_rounding() -> Subject:
    (subject,) = Suite("sr", target="fabric").subjects
    return subject


@pytest.mark.parametrize("seed", range(16))
def test_steps_rounded_stochastically_pass_with_any_seed(stochastic_rounding: Subject, seed: int) -> None:
    subject = _Seeded(
        stochastic_rounding.backend, stochastic_rounding.device, "bf16-true", stochastic_rounding.availability
    )
    subject.seed = seed
    assert subject.contract is not None
    step_applied.function(subject, subject.contract)
    unscale_gradients_without_scaler.function(subject, subject.contract)
