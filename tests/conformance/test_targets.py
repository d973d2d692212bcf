"""Targets: a backend says which objects it builds (Backend.targets); the resolver and the suite follow it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

import mixprec
from mixprec.testing import Suite
from tests.cli_runs import run_cli
from tests.conformance.backends import REFERENCE_POLICY, install
from tests.distributions import Site

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")


def _fabric_only(site: Site, name: str = "fabric-only") -> str:
    """A backend for bf16-true on the CPU above every other, building Fabric's objects only."""
    return _installed(site, name, ("fabric",))


def _installed(site: Site, name: str, targets: tuple[str, ...]) -> str:
    return install(site, name, REFERENCE_POLICY, precisions=("bf16-true",), targets=targets, priority=1000)


def test_a_backend_builds_both_targets_unless_it_says_otherwise() -> None:
    backend = mixprec.Backend("b", "cpu", ("bf16-mixed",), "pkg.policy")
    assert backend.targets == ("fabric", "trainer")


@pytest.mark.parametrize(
    ("targets", "problem"),
    [
        ((), "must be a non-empty tuple"),
        ("fabric", "must be a non-empty tuple"),
        (("fabric", "deepspeed"), "['deepspeed'] are not targets"),
        (("trainer", "trainer"), "lists one target twice"),
    ],
)
def test_targets_that_are_not_a_tuple_of_known_targets_are_a_plugin_error(targets: Any, problem: str) -> None:
    with pytest.raises(mixprec.PluginError, match=re.escape(problem)):
        mixprec.Backend("b", "cpu", ("bf16-mixed",), "pkg.policy", targets=targets)


def test_the_resolver_passes_a_backend_over_for_a_target_it_does_not_build(site: Site) -> None:
    _fabric_only(site)
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend == "fabric-only"
    trainer = mixprec.get_precision("bf16-true", "cpu", target="trainer")
    assert trainer.mixprec_backend not in ("fabric-only", None)
    assert isinstance(trainer, TrainerPrecision)


def test_the_resolver_passes_a_trainer_only_backend_over_for_fabric(site: Site) -> None:
    _installed(site, "trainer-only", ("trainer",))
    assert mixprec.get_precision("bf16-true", "cpu", target="trainer").mixprec_backend == "trainer-only"
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend != "trainer-only"


def test_naming_a_backend_for_a_target_it_does_not_build_says_which_it_builds(site: Site) -> None:
    _fabric_only(site)
    with pytest.raises(mixprec.BackendNotFoundError, match="only for target='fabric', not for target='trainer'"):
        mixprec.get_precision("bf16-true", "cpu", backend="fabric-only", target="trainer")


def test_the_suite_skips_the_cases_of_a_target_the_backend_does_not_build_with_the_reason(site: Site) -> None:
    cases = Suite(_fabric_only(site)).cases
    trainers = [case for case in cases if case.target == "trainer"]
    assert trainers
    assert {case.skip_reason for case in trainers} == {
        "backend 'fabric-only' builds objects only for target='fabric' (Backend.targets), not 'trainer'"
    }
    assert all(case.skip_reason is None for case in cases if case.target == "fabric")


def test_trainer_case_ids_name_the_target_and_fabric_ids_stay_as_they_were() -> None:
    ids = [case.id for case in Suite("core", precision="32-true").cases]
    assert "32-true:forward_autocast" in ids
    assert "trainer/32-true:forward_autocast" in ids
    assert "trainer/32-true:trainer_fit" in ids
    assert not [i for i in ids if i.startswith("fabric/")]


@pytest.mark.parametrize("target", ["fabric", "trainer"])
def test_a_target_runs_only_that_targets_cases(target: str) -> None:
    assert {case.target for case in Suite("core", precision="32-true", target=target).cases} == {target}


def test_an_unknown_target_is_refused_by_mixprec_check() -> None:
    ran = run_cli(["check", "core", "--target", "deepspeed"])
    assert ran.code == 2
    assert "Unknown target 'deepspeed': use 'fabric' or 'trainer'" in ran.err


def test_an_unknown_target_is_a_precision_error_in_the_library() -> None:
    with pytest.raises(mixprec.PrecisionError, match="Unknown target 'deepspeed'"):
        Suite("core", target="deepspeed")


@pytest.mark.slow
def test_mixprec_check_target_and_precision_filter_together_and_json_names_each_target(site: Site) -> None:
    ran = run_cli(["check", "core", "--precision", "64-true", "--target", "trainer", "--strategy", "none", "--json"])
    report = json.loads(ran.out)
    assert ran.code == 0, ran.out
    assert {(r["target"], r["precision"]) for r in report["results"]} == {("trainer", "64-true")}
    assert all(r["id"] == f"trainer/64-true:{r['check']}" for r in report["results"])
