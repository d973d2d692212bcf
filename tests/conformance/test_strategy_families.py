"""Strategy families: a backend says which it builds objects for (Backend.strategy_families); the resolver and the
suite follow it, and the suite checks the FSDP objects in a process group it leaves as it found it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import torch.distributed as dist

import mixprec
from mixprec.testing import CHECKS, Suite, run
from mixprec.testing._checks_fsdp import FSDP_CHECKS, NOT_SHARED
from mixprec.testing._strategies import process_group, unreduced
from tests.cli_runs import run_cli
from tests.conformance.backends import REFERENCE_POLICY, install
from tests.distributions import Site

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")


def _without_fsdp(site: Site, name: str = "no-fsdp") -> str:
    """A backend for bf16-true on the CPU above every other, building no FSDP objects."""
    return install(site, name, REFERENCE_POLICY, precisions=("bf16-true",), strategy_families=(), priority=1000)


def test_a_backend_builds_every_strategy_family_unless_it_says_otherwise() -> None:
    assert mixprec.Backend("b", "cpu", ("bf16-mixed",), "pkg.policy").strategy_families == ("fsdp",)


def test_a_backend_may_build_no_strategy_family() -> None:
    assert mixprec.Backend("b", "cpu", ("bf16-mixed",), "pkg.policy", strategy_families=[]).strategy_families == ()


@pytest.mark.parametrize(
    ("families", "problem"),
    [
        ("fsdp", "must be a tuple of 'fsdp', or () for none"),
        (("fsdp", "deepspeed"), "['deepspeed'] are not strategy families"),
        (("fsdp", "fsdp"), "lists one family twice"),
    ],
)
def test_strategy_families_that_are_not_a_tuple_of_known_families_are_a_plugin_error(
    families: Any, problem: str
) -> None:
    with pytest.raises(mixprec.PluginError, match=re.escape(problem)):
        mixprec.Backend("b", "cpu", ("bf16-mixed",), "pkg.policy", strategy_families=families)


def test_the_resolver_passes_a_backend_over_for_a_strategy_family_it_does_not_build(site: Site) -> None:
    _without_fsdp(site)
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend == "no-fsdp"
    assert mixprec.get_precision("bf16-true", "cpu", strategy="ddp").mixprec_backend == "no-fsdp"
    for target in ("fabric", "trainer"):
        fsdp = mixprec.get_precision("bf16-true", "cpu", strategy="fsdp", target=target)
        assert fsdp.mixprec_backend not in ("no-fsdp", None)
        assert type(fsdp).__name__ == "FSDPPrecision"


def test_naming_a_backend_for_a_strategy_family_it_does_not_build_says_so(site: Site) -> None:
    _without_fsdp(site)
    with pytest.raises(mixprec.BackendNotFoundError, match="builds no 'bf16-true' objects for the 'fsdp' strategies"):
        mixprec.get_precision("bf16-true", "cpu", backend="no-fsdp", strategy="fsdp")


def test_a_precision_only_backends_without_the_family_offer_is_an_error_naming_them_and_what_to_use(site: Site) -> None:
    install(site, "own-fsdp-less", REFERENCE_POLICY, precisions=("acme-own",), strategy_families=())
    with pytest.raises(mixprec.BackendNotFoundError) as refused:
        mixprec.get_precision("acme-own", "cpu", strategy="fsdp")
    message = str(refused.value)
    assert "'own-fsdp-less' builds none for the 'fsdp' strategies (its Backend.strategy_families is ())" in message
    assert "strategy='ddp'" in message
    assert "other devices" not in message


def test_a_precision_only_backends_for_the_other_target_offer_is_an_error_naming_them(site: Site) -> None:
    install(site, "own-fabric-only", REFERENCE_POLICY, precisions=("acme-own",), targets=("fabric",))
    with pytest.raises(
        mixprec.BackendNotFoundError, match=r"'own-fabric-only' builds objects only for target='fabric'"
    ):
        mixprec.get_precision("acme-own", "cpu", target="trainer")


def test_our_backends_that_refuse_fsdp_declare_it() -> None:
    from mixprec._policies import current

    backends = current()[0].backends
    assert {name: backends[name].backend.strategy_families for name in ("fp8", "fp8-cuda", "cpu", "core")} == {
        "fp8": (),
        "fp8-cuda": (),
        "cpu": ("fsdp",),
        "core": ("fsdp",),
    }


def test_the_suite_builds_no_cases_for_a_family_the_backend_does_not_build_and_says_why(site: Site) -> None:
    suite = Suite(_without_fsdp(site))
    assert {case.subject.family for case in suite.cases} == {None}
    reason = "backend 'no-fsdp' builds no objects for strategy='fsdp' (its Backend.strategy_families is ())"
    assert dict(suite.unserved) == {"fsdp": reason}
    report = suite.run()
    assert f"strategy='fsdp': skipped: {reason}" in str(report)
    assert json.loads(report.to_json())["skipped_strategies"] == {"fsdp": reason}


def test_fsdp_case_ids_name_the_family_after_the_plain_ones() -> None:
    ids = [case.id for case in Suite("core", precision="32-true").cases]
    assert "32-true:forward_autocast" in ids
    assert "fsdp/32-true:forward_autocast" in ids
    assert "trainer-fsdp/32-true:trainer_fit" in ids
    assert "fsdp/32-true:fsdp_mixed_precision_config" in ids
    assert ids.index("trainer/32-true:trainer_fit") < ids.index("fsdp/32-true:forward_autocast")


def test_the_fsdp_checks_run_on_the_fsdp_objects_alone() -> None:
    plain = {case.check for case in Suite("core", strategy="none").cases}
    assert plain.isdisjoint(FSDP_CHECKS)


def test_the_shared_checks_fsdp_does_not_promise_do_not_run_on_its_objects() -> None:
    checks = {case.check.name for case in Suite("cpu", strategy="fsdp").cases}
    assert checks.isdisjoint(NOT_SHARED)
    assert {"forward_dtype", "nonfinite_step_skipped", "trainer_fit", "load_state_dict_restores"} <= checks


def test_not_shared_names_checks_that_exist() -> None:
    assert set(NOT_SHARED) - {c.name for c in CHECKS} == set()


def test_a_float64_precisions_fsdp_object_gets_only_the_check_that_it_is_refused() -> None:
    cases = Suite("core", precision="64-true", strategy="fsdp").cases
    expected = ["fsdp/64-true:fsdp_refuses_float64", "trainer-fsdp/64-true:fsdp_refuses_float64"]
    assert [case.id for case in cases] == expected


@pytest.mark.parametrize(("strategy", "families"), [("fsdp", {"fsdp"}), ("none", {None}), (None, {None, "fsdp"})])
def test_a_strategy_runs_only_that_familys_cases(strategy: str | None, families: set[str | None]) -> None:
    assert {case.subject.family for case in Suite("core", precision="32-true", strategy=strategy).cases} == families


def test_an_unknown_strategy_family_is_a_precision_error_in_the_library() -> None:
    with pytest.raises(mixprec.PrecisionError, match="Unknown strategy family 'deepspeed'"):
        Suite("core", strategy="deepspeed")


def test_an_unknown_strategy_family_is_refused_by_mixprec_check() -> None:
    ran = run_cli(["check", "core", "--strategy", "deepspeed"])
    assert ran.code == 2
    assert "Unknown strategy family 'deepspeed': use one of 'fsdp', 'none'" in ran.err


@pytest.mark.slow
def test_mixprec_check_strategy_fsdp_runs_the_fsdp_objects_and_leaves_no_process_group() -> None:
    ran = run_cli(["check", "core", "--precision", "32-true", "--strategy", "fsdp", "--json"])
    report = json.loads(ran.out)
    assert ran.code == 0, ran.out
    assert {(r["target"], r["family"]) for r in report["results"]} == {("fabric", "fsdp"), ("trainer", "fsdp")}
    assert {r["outcome"] for r in report["results"]} == {"passed"}
    assert not dist.is_initialized()


def test_the_suite_starts_a_one_process_group_for_an_fsdp_case_and_destroys_it() -> None:
    assert not dist.is_initialized()
    with process_group():
        assert (dist.is_initialized(), dist.get_world_size(), dist.get_backend()) == (True, 1, "gloo")
    assert not dist.is_initialized()


def test_the_suite_uses_the_process_group_that_exists_and_leaves_it() -> None:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # type: ignore[attr-defined]
    try:
        group = dist.group.WORLD
        report = run("core", precision="16-true", strategy="fsdp")
        assert report.ok, str(report)
        assert dist.is_initialized()
        assert dist.group.WORLD is group
    finally:
        dist.destroy_process_group()


def test_a_scaled_fsdp_step_runs_in_the_suites_process_group_and_leaves_none() -> None:
    report = run("core", precision="32-true", strategy="fsdp")
    assert report.ok, str(report)
    report = run("cpu", precision="16-mixed", strategy="fsdp")
    assert report.ok, str(report)
    assert report.count("passed") > 50
    assert not dist.is_initialized()


@pytest.mark.parametrize("device_type", ["cpu", "cuda", "mps"])
def test_fsdp_runs_where_the_suites_gloo_group_reduces_the_devices_tensors(device_type: str) -> None:
    assert unreduced(device_type) is None


def test_fsdp_is_not_run_on_a_device_type_torch_distributed_has_no_backend_for() -> None:
    assert "torch.distributed has no backend for device type 'nodist'" in (unreduced("nodist") or "")


def test_fsdp_on_a_device_type_of_another_backend_is_run_only_under_the_users_process_group() -> None:
    assert "under torchrun with a 'xccl' process group" in (unreduced("xpu") or "")
    with process_group():
        assert unreduced("xpu") is None
