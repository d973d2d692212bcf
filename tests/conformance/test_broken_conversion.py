"""The conversion checks catch what matters: broken fp8 backends each fail exactly the checks named for their defect.

Every backend here is mixprec-fp8's own "fp8-mixed" object (torchao's float8 layers, emulated on
the CPU) with one defect in how it converts the model, installed as a real distribution through a
real entry point and checked with the library call ``mixprec check`` makes. The control, the same
classes without a defect, passes every check. The table is the specification of the conversion
checks: which defect fails which checks, and nothing else.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, Report, run
from mixprec.testing import _conversion as conversion
from tests.conformance.backends import install
from tests.distributions import Site, site_on_path

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

_POLICY = '''
import copy

import torch

from mixprec import Availability
from mixprec_fp8 import _trainer
from mixprec_fp8.precision import Float8Precision
from mixprec_fp8._torchao import convert_to_float8_training


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


class Placeholder(torch.nn.Linear):
    """A linear layer of the backend's own that computes as nn.Linear does."""


def placeholders(module):
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                layer = Placeholder(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                layer.weight, layer.bias = child.weight, child.bias
                setattr(parent, name, layer)
    return module


class Fabric(Float8Precision):
{methods}


class Trainer(_trainer.Float8Precision):
{methods}


def create(request):
    cls = Trainer if request.target == "trainer" else Fabric
    return cls(request.device.type, **request.options)
'''


def conversion_policy(methods: str = "pass") -> str:
    """mixprec-fp8's Fabric and Trainer classes with ``methods`` (class-body source) in place of their own."""
    return _POLICY.format(methods=textwrap.indent(textwrap.dedent(methods).strip(), "    "))


@dataclass(frozen=True)
class Defect:
    name: str
    fails: frozenset[str]
    methods: str
    note: str = ""


def _defect(name: str, fails: str, methods: str, note: str = "") -> Defect:
    return Defect(name, frozenset(fails.split()), methods, note)


DEFECTS = [
    _defect(
        "converts-nothing",
        "converts_eligible_layers converted_matmul_dtype fabric_setup_converts trainer_converts",
        """
        def convert_module(self, module):
            return module  # "bf16-mixed until the float8 kernels land"
        """,
        note="the model trains as bf16-mixed does, within fp8's tolerance: only the conversion checks can tell",
    ),
    _defect(
        "converts-ineligible-layers",
        "conversion_leaves_other_layers",
        """
        def convert_module(self, module):
            return convert_to_float8_training(module, config=self.layers.config)  # torchao without a filter
        """,
        note="torchao's emulation takes a Linear(32, 1) on the CPU; float8 tensor cores do not",
    ),
    _defect(
        "matmuls-in-bfloat16",
        "converted_matmul_dtype",
        """
        def convert_module(self, module):
            return placeholders(module)  # layers of its own, computing as nn.Linear does
        """,
    ),
    _defect(
        "state-dict-gains-keys",
        "converted_state_dict_matches_plain",
        """
        def convert_module(self, module):
            module = super().convert_module(module)
            for name in self.conversion.converted:  # "the weight's scale, kept for logging", persistent
                module.get_submodule(name).register_buffer("weight_scale", torch.ones(()))
            return module
        """,
    ),
    _defect(
        "hook-per-conversion",
        "conversion_idempotent",
        """
        def convert_module(self, module):
            module = super().convert_module(module)
            module.register_forward_pre_hook(lambda module, args: args)  # "inputs to the first float8 layer"
            return module
        """,
        note="Fabric.setup of a model the user converted registers the hook a second time",
    ),
    _defect(
        "gradients-left-scaled",
        "converted_training_matches_fp32",
        """
        def convert_module(self, module):
            module = super().convert_module(module)
            for name in self.conversion.converted:  # "gradients scaled into float8_e5m2's range", never scaled back
                module.get_submodule(name).weight.register_hook(lambda grad: grad / 64)
            return module
        """,
        note="every promise but training holds: the weights move, 64 times too little",
    ),
    _defect(
        "converts-a-copy",
        "conversion_idempotent fabric_setup_converts trainer_converts fabric_loop",
        """
        def convert_module(self, module):
            return super().convert_module(copy.deepcopy(module))  # "leave the user's model as it is"
        """,
        note="the optimizer made before fabric.setup steps the old weights, so fabric_loop does not train either",
    ),
]


class Reports:
    """Each broken backend installed once, its suite run once, on first use: the tests share the runs."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str, policy: str) -> Report:
        if name not in self.runs:
            install(self.site, name, policy, precisions=("fp8-mixed",))
            self.runs[name] = run(name)
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-conversion"))) as site:
        yield Reports(site)


def _failed(report: Report) -> set[str]:
    return {r.check for r in report.failures}


CONVERSION_CHECKS = [check.name for check in CHECKS if check.function.__module__ == conversion.__name__]


def test_the_conversion_checks_are_part_of_the_suite() -> None:
    assert CONVERSION_CHECKS == [
        "converts_eligible_layers",
        "conversion_leaves_other_layers",
        "converted_matmul_dtype",
        "converted_training_matches_fp32",
        "converted_state_dict_matches_plain",
        "conversion_idempotent",
        "fabric_setup_converts",
        "trainer_converts",
    ]


def test_every_defect_names_checks_that_exist() -> None:
    names = {check.name for check in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


def test_every_conversion_check_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {check for d in DEFECTS for check in d.fails}
    assert [c for c in CONVERSION_CHECKS if c not in proven] == []


@pytest.mark.slow
def test_mixprec_fp8s_own_classes_pass_every_check(reports: Reports) -> None:
    report = reports.of("fp8-control", conversion_policy())
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_conversion_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    report = reports.of(f"broken-{defect.name}", conversion_policy(defect.methods))
    assert _failed(report) == defect.fails, str(report)


@pytest.mark.slow
def test_a_conversion_that_converts_nothing_is_told_which_layers_to_convert(reports: Reports) -> None:
    report = reports.of("broken-converts-nothing", conversion_policy(DEFECTS[0].methods))
    (failure,) = [r for r in report.failures if r.id == "fp8-mixed:converts_eligible_layers"]
    assert "2 of 2 layers the contract converts are still plain" in failure.detail
    assert "torch.nn.Linear whose weight's dimensions are multiples of 16" in failure.detail
