"""How the suite chooses, skips and reports: absent devices, unusable precisions, declared capabilities."""

from __future__ import annotations

import pytest

import mixprec
from mixprec.testing import CHECKS, Suite, run
from tests.conformance.backends import REFERENCE_POLICY, broken_policy, install
from tests.distributions import Site

UNAVAILABLE_POLICY = """
from mixprec import Availability


def availability(precision, device):
    return Availability.unavailable("this CPU lacks the fictional FP8 unit")


def device_count():
    return 1


def create(request):
    raise AssertionError("never asked")
"""

FAILING_POLICY = """
def availability(precision, device):
    raise OSError("probe crashed")


def device_count():
    return 1


def create(request):
    raise AssertionError("never asked")
"""


def test_an_absent_device_is_skipped_with_the_reason_never_passed(site: Site) -> None:
    name = install(site, "fake-cuda", REFERENCE_POLICY, precisions=("bf16-mixed", "16-mixed"), device_type="cuda")
    report = run(name)
    assert {r.outcome for r in report.results} == {"skipped"}
    assert all("no cuda device here" in r.detail for r in report.results)
    assert report.ok
    assert "nothing was verified" in report.summary()


def test_a_precision_the_backend_cannot_run_here_is_skipped_with_the_policy_reason(site: Site) -> None:
    report = run(install(site, "no-fp8", UNAVAILABLE_POLICY))
    assert {r.outcome for r in report.results} == {"skipped"}
    assert all("fictional FP8 unit" in r.detail for r in report.results)


def test_a_policy_whose_availability_raises_fails_every_check(site: Site) -> None:
    name = install(site, "crashing", FAILING_POLICY)
    with pytest.warns(mixprec.PrecisionWarning, match="probe crashed"):
        report = run(name)
    assert {r.outcome for r in report.results} == {"failed"}
    assert "probe crashed" in report.failures[0].detail


def test_a_precision_without_a_contract_is_skipped_with_the_reason(site: Site) -> None:
    report = run(install(site, "own-precision", REFERENCE_POLICY, precisions=("fp8-mixed",)))
    assert {r.outcome for r in report.results} == {"skipped"}
    assert "no contract for 'fp8-mixed'" in report.results[0].detail


def test_a_declared_capability_that_fails_is_a_failure(site: Site) -> None:
    policy = broken_policy("def optimizer_step(self, optimizer, **kwargs):\n    return optimizer.step()")
    report = run(install(site, "claims-closure", policy))
    assert [r.check for r in report.failures] == ["lbfgs_closure"]


def test_an_unknown_capability_name_is_an_error_naming_the_known_ones(site: Site) -> None:
    name = install(site, "typo", REFERENCE_POLICY, unsupported={"lbfgs-closure": "no closures"})
    with pytest.raises(mixprec.PluginError, match=r"unknown capabilities \['lbfgs-closure'\].*'lbfgs_closure'"):
        Suite(name)


def test_an_unknown_backend_is_an_error_listing_the_installed_ones() -> None:
    with pytest.raises(mixprec.BackendNotFoundError, match=r"Installed backends: .*cpu"):
        Suite("nope")


def test_a_device_of_another_type_is_an_error() -> None:
    with pytest.raises(mixprec.DeviceError, match="serves device type 'cpu', not 'cuda'"):
        Suite("cpu", device="cuda")


def test_a_precision_the_backend_does_not_offer_is_an_error_listing_those_it_does() -> None:
    with pytest.raises(mixprec.UnknownPrecisionError, match="it offers bf16-mixed, 16-mixed"):
        Suite("cpu", precision="32-true")


def test_cases_are_every_applicable_check_of_each_precision_in_order() -> None:
    cases = Suite("core", precision="32-true").cases
    expected = [c.name for c in CHECKS if c.applies(cases[0].subject.contract)]  # type: ignore[arg-type]
    assert [case.id for case in cases] == [f"32-true:{name}" for name in expected]
    assert "loss_scaled" not in expected


def test_a_failing_check_is_reported_with_what_was_expected(site: Site) -> None:
    policy = broken_policy("def convert_module(self, module):\n    return module.to(torch.bfloat16)")
    report = run(install(site, "half-weights", policy), precision="bf16-mixed")
    expected = "FAILED  parameter_dtype: after convert_module the parameters are ['torch.bfloat16'], not torch.float32"
    assert expected in str(report)
