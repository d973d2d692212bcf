"""The FSDP objects' checks proven: mixprec's FSDP classes pass them, and each broken one fails exactly its checks.

Each defect is mixprec's own ``FSDPPrecision`` (Fabric's or the Trainer's) with one method or attribute replaced,
or built in another way, installed as a real distribution and run through the suite for the FSDP objects only
(``strategy="fsdp"``). The Trainer's defects are what Lightning's own ``FSDPPrecision`` does, which mixprec's
class corrects: shared checks catch them on the FSDP object.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixprec.testing import Report, run
from mixprec.testing._checks_fsdp import FSDP_CHECKS
from tests.conformance.backends import install
from tests.distributions import Site, site_on_path

pytestmark = [
    pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning"),
    # The defect of lightnings-cuda-scaler-warning-shown, at each object it builds.
    pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available"),
]

_POLICY = """
import dataclasses

import torch
from lightning.fabric.plugins.precision.utils import _convert_fp_tensor
from lightning.pytorch.plugins.precision import FSDPPrecision as LightningTrainerFSDP
from lightning_utilities.core.apply_func import apply_to_collection

from mixprec import Availability
from mixprec import _fabric, _trainer
from mixprec.precision import make_scaler, standard_precision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


class Broken(_fabric.FSDPPrecision):
{methods}


class FSDPPrecision(_trainer.FSDPPrecision):  # the Trainer files its state under the class's name
{trainer_methods}


def build(request):
    if request.strategy is None or request.precision == "64-true":
        return standard_precision(request)
    cls = FSDPPrecision if request.target == "trainer" else Broken
    scaler = make_scaler(request) if request.precision == "16-mixed" else None
    return cls(request.precision, request.device.type, scaler=scaler)


def create(request):
{create}
"""


def _policy(methods: str = "pass", trainer_methods: str = "pass", create: str = "return build(request)") -> str:
    def indented(source: str) -> str:
        return textwrap.indent(textwrap.dedent(source).strip(), "    ")

    return _POLICY.format(methods=indented(methods), trainer_methods=indented(trainer_methods), create=indented(create))


@dataclass(frozen=True)
class Defect:
    """One broken backend: its defect, the precision it shows in, and the checks (by case id) it must fail."""

    name: str
    precision: str
    fails: frozenset[str]
    methods: str = "pass"
    trainer_methods: str = "pass"
    create: str = "return build(request)"


def _defect(name: str, precision: str, fails: str, **kwargs: str) -> Defect:
    return Defect(name, precision, frozenset(fails.split()), **kwargs)


DEFECTS = [
    _defect(
        "reduces-gradients-in-float32",
        "bf16-mixed",
        "fsdp/bf16-mixed:fsdp_mixed_precision_config",
        methods="""
        @property
        def mixed_precision_config(self):
            from torch.distributed.fsdp import MixedPrecision

            return MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
        """,
    ),
    _defect(
        "casts-inputs-to-the-compute-dtype",
        "bf16-mixed",
        "fsdp/bf16-mixed:fsdp_converts_io",
        methods="""
        def convert_input(self, data):
            return apply_to_collection(data, torch.Tensor, _convert_fp_tensor, dst_type=torch.bfloat16)
        """,
    ),
    _defect(
        "builds-float64-for-fsdp",
        "64-true",
        "fsdp/64-true:fsdp_refuses_float64 trainer-fsdp/64-true:fsdp_refuses_float64",
        create="return standard_precision(dataclasses.replace(request, strategy=None))",
    ),
    _defect(
        "refuses-float64-with-lightnings-value-error",
        "64-true",
        "fsdp/64-true:fsdp_refuses_float64 trainer-fsdp/64-true:fsdp_refuses_float64",
        create="""
        if request.precision == "64-true":
            return _fabric.FSDPPrecision("64-true", request.device.type)
        return build(request)
        """,
    ),
    _defect(
        "an-unsharded-grad-scaler",
        "16-mixed",
        "fsdp/16-mixed:fsdp_scaler_is_sharded trainer-fsdp/16-mixed:fsdp_scaler_is_sharded",
        create="""
        cls = FSDPPrecision if request.target == "trainer" else Broken
        plain = make_scaler(dataclasses.replace(request, strategy=None))  # torch.amp.GradScaler
        return cls(request.precision, request.device.type, scaler=plain)
        """,
    ),
    _defect(
        "a-scaler-holding-the-process-group",
        "16-mixed",
        "fsdp/16-mixed:pickle_round_trip trainer-fsdp/16-mixed:pickle_round_trip",
        create="""
        import torch.distributed as dist

        obj = build(request)
        obj.scaler.process_group = dist.group.WORLD  # torch's default where it imports the module in a group
        return obj
        """,
    ),
    _defect(
        "lightnings-trainer-step-unscales-without-a-loss",
        "16-mixed",
        # Lightning's step also runs LBFGS's closure before refusing it, unscales a second time after clipping
        # under manual optimization, and leaves a fused optimizer's gradients scaled for its hooks.
        "trainer-fsdp/16-mixed:trainer_skips_step_without_loss"
        " trainer-fsdp/16-mixed:trainer_lbfgs_refused_before_closure"
        " trainer-fsdp/16-mixed:trainer_manual_clipping_sees_true_gradients"
        " trainer-fsdp/16-mixed:trainer_manual_fused_optimizer_unscaled"
        " trainer-fsdp/16-mixed:trainer_skipped_batch_after_clipping_leaves_the_next_step_ready",
        trainer_methods="""
        def optimizer_step(self, optimizer, model, closure, **kwargs):
            return LightningTrainerFSDP.optimizer_step(self, optimizer, model, closure, **kwargs)
        """,
    ),
    _defect(
        "lightnings-cuda-scaler-warning-shown",
        "16-mixed",
        "fsdp/16-mixed:fsdp_built_without_warnings trainer-fsdp/16-mixed:fsdp_built_without_warnings",
        create="""
        from lightning.fabric.plugins.precision import FSDPPrecision as Lightnings

        Lightnings("16-mixed")  # its own ShardedGradScaler for "cuda": a warning on a machine without CUDA
        return build(request)
        """,
    ),
    _defect(
        "norm-clipping-ignored",
        "bf16-mixed",
        "trainer-fsdp/bf16-mixed:fsdp_norm_clipping_refused",
        trainer_methods="""
        def clip_grad_by_norm(self, optimizer, clip_val):
            pass
        """,
    ),
    _defect(
        "lightnings-trainer-autocast-cache",
        "bf16-mixed",
        "trainer-fsdp/bf16-mixed:trainer_step_contexts_see_updated_weights",
        trainer_methods="_autocast_cache = True",
    ),
]


class Reports:
    """Each broken backend installed once and its FSDP objects checked once, on first use: the tests share the runs."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str, policy: str, precisions: tuple[str, ...]) -> Report:
        if name not in self.runs:
            install(self.site, name, policy, precisions=precisions, strategy_families=("fsdp",))
            self.runs[name] = run(name, strategy="fsdp")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-fsdp"))) as site:
        yield Reports(site)


STANDARD = ("16-mixed", "bf16-mixed", "16-true", "bf16-true", "32-true", "64-true")


@pytest.mark.slow
def test_mixprecs_fsdp_classes_pass_every_check_of_every_standard_precision(reports: Reports) -> None:
    report = reports.of("fsdp-control", _policy(), STANDARD)
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)
    assert {r.family for r in report.results} == {"fsdp"}
    assert {r.target for r in report.results} == {"fabric", "trainer"}


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_fsdp_class_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    policy = _policy(defect.methods, defect.trainer_methods, defect.create)
    report = reports.of(f"broken-fsdp-{defect.name}", policy, (defect.precision,))
    assert {r.id for r in report.failures} == defect.fails, str(report)


def test_every_fsdp_check_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {case.rpartition(":")[2] for d in DEFECTS for case in d.fails}
    assert [c.name for c in FSDP_CHECKS if c.name not in proven] == []
