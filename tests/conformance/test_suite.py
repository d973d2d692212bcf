"""How the suite chooses, skips and reports: contracts, absent devices, unusable precisions, declared capabilities."""

from __future__ import annotations

import json
import re
import sys

import pytest

import mixprec
import mixprec.testing
from mixprec.testing import CHECKS, Check, Suite, run
from mixprec.testing._checks_fsdp import FSDP_CHECKS
from tests.conformance.backends import CONTROL_POLICY, REFERENCE_POLICY, broken_policy, install
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

#: The reference policy on a machine where it counts no device of its type.
NO_DEVICE_POLICY = REFERENCE_POLICY.replace("return 1", "return 0")

#: The control's bf16-mixed object, under the precision name it was asked for.
OWN_PRECISION = """
obj = Mixed("bf16-mixed", request.device.type)
obj.precision = request.precision
return obj
"""
#: The Trainer's class picks its dtype from the precision's name; under another name it is told the dtype.
OWN_TRAINER_METHODS = """
def autocast_context_manager(self):
    return torch.autocast(self.device, dtype=torch.bfloat16, cache_enabled=False)
"""
OWN_TRAINER = {
    "trainer_create": OWN_PRECISION.replace("Mixed(", "TrainerMixed("),
    "trainer_methods": OWN_TRAINER_METHODS,
}
OWN_PRECISION_POLICY = broken_policy(create=OWN_PRECISION, **OWN_TRAINER)

#: A fused optimizer refused: the one defect of these objects, behind the capability "fused_optimizers".
NO_FUSED = """
def optimizer_step(self, optimizer, **kwargs):
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        raise NotImplementedError("fused optimizers are not supported")
    return super().optimizer_step(optimizer, **kwargs)
"""
NO_FUSED_POLICY = broken_policy(NO_FUSED)


def test_an_absent_device_is_skipped_with_the_reason_never_passed(site: Site) -> None:
    name = install(site, "fake-cuda", NO_DEVICE_POLICY, precisions=("bf16-mixed", "16-mixed"), device_type="cuda")
    report = run(name)
    skipped = [r for r in report.results if r.check != "contract_declared"]
    assert {r.outcome for r in skipped} == {"skipped"}
    assert all("no cuda device here: device_count() of backend 'fake-cuda' is 0" in r.detail for r in skipped)
    assert report.ok
    assert "nothing was verified" in report.summary()


def test_the_device_count_is_the_backends_own_even_where_torch_has_the_device(site: Site) -> None:
    report = run(install(site, "no-cpu", NO_DEVICE_POLICY))
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"skipped"}
    assert "device_count() of backend 'no-cpu' is 0" in report.results[-1].detail


def test_a_device_index_beyond_the_backends_count_is_skipped_with_the_reason(site: Site) -> None:
    report = run(install(site, "one-cpu", REFERENCE_POLICY), device="cpu:1")
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"skipped"}
    assert "cpu:1 does not exist: device_count() of backend 'one-cpu' is 1" in report.results[-1].detail


def test_the_every_device_backend_on_a_device_its_type_backend_counts_none_of_is_skipped() -> None:
    report = run("core", device="cuda", precision="32-true")
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"skipped"}
    assert "device_count() of backend 'cuda' is 0" in report.results[-1].detail


def test_the_every_device_backend_on_a_device_type_without_a_backend_is_counted_by_torch() -> None:
    report = run("core", device="xpu", precision="32-true")
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"skipped"}
    assert "torch.xpu.device_count() is 0" in report.results[-1].detail


def test_contract_declared_passes_even_where_the_device_is_absent(site: Site) -> None:
    report = run(install(site, "fake-cuda", NO_DEVICE_POLICY, device_type="cuda"))
    (declared,) = [r for r in report.results if r.check == "contract_declared"]
    assert declared.outcome == "passed"


def test_a_precision_the_backend_cannot_run_here_is_skipped_with_the_policy_reason(site: Site) -> None:
    report = run(install(site, "no-fp8", UNAVAILABLE_POLICY))
    skipped = [r for r in report.results if r.check != "contract_declared"]
    assert {r.outcome for r in skipped} == {"skipped"}
    assert all("fictional FP8 unit" in r.detail for r in skipped)


def test_a_policy_whose_availability_raises_fails_every_check(site: Site) -> None:
    name = install(site, "crashing", FAILING_POLICY)
    with pytest.warns(mixprec.PrecisionWarning, match="probe crashed"):
        report = run(name)
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"failed"}
    assert "probe crashed" in report.failures[0].detail


def test_a_precision_without_a_contract_fails_contract_declared_and_runs_nothing_else(site: Site) -> None:
    report = run(install(site, "own-precision", OWN_PRECISION_POLICY, precisions=("my-bf16",)))
    assert [(r.check, r.outcome) for r in report.results] == [("contract_declared", "failed")]
    assert not report.ok


def test_the_undeclared_contract_failure_shows_how_to_declare_one(site: Site) -> None:
    report = run(install(site, "own-precision", OWN_PRECISION_POLICY, precisions=("my-bf16",)))
    detail = report.failures[0].detail
    assert "Backend(..., contracts={'my-bf16': Contract(compute_dtype='bfloat16', autocast=True)})" in detail
    assert "from mixprec import Contract" in detail


def test_a_declared_contract_is_checked_like_the_standard_one_with_the_same_fields(site: Site) -> None:
    declared = {"my-bf16": "Contract('bfloat16', autocast=True)"}
    own = run(install(site, "own", OWN_PRECISION_POLICY, precisions=("my-bf16",), contracts=declared))
    standard = run(install(site, "standard", CONTROL_POLICY, precisions=("bf16-mixed",)))
    assert [(r.check, r.outcome) for r in own.results] == [(r.check, r.outcome) for r in standard.results]
    assert own.ok
    assert own.contracts == {"my-bf16": "declared"}


def test_an_object_that_breaks_its_declared_contract_fails_the_check_of_that_field(site: Site) -> None:
    declared = {"my-fp16": "Contract('float16', autocast=True)"}  # the object computes in bfloat16
    report = run(install(site, "mislabelled", OWN_PRECISION_POLICY, precisions=("my-fp16",), contracts=declared))
    assert {r.check for r in report.failures} == {"forward_dtype", "nested_forward_context", "convert_input"}


def test_a_capability_a_contract_declares_unsupported_is_skipped_with_its_reason(site: Site) -> None:
    declared = {"my-bf16": "Contract('bfloat16', autocast=True, unsupported={'fused_optimizers': 'no fused kernels'})"}
    policy = broken_policy(NO_FUSED, OWN_PRECISION, **OWN_TRAINER)
    report = run(install(site, "own-no-fused", policy, precisions=("my-bf16",), contracts=declared))
    (result,) = [r for r in report.results if r.check == "fused_optimizers"]
    assert (result.outcome, result.detail) == (
        "skipped",
        "the precision's contract declares 'fused_optimizers' unsupported: no fused kernels",
    )
    assert report.ok


def test_a_capability_declared_unsupported_is_skipped_with_the_reason(site: Site) -> None:
    reason = "this accelerator has no fused kernels"
    report = run(install(site, "no-fused", NO_FUSED_POLICY, unsupported={"fused_optimizers": reason}))
    (result,) = [r for r in report.results if r.check == "fused_optimizers"]
    assert (result.outcome, reason in result.detail) == ("skipped", True)
    assert report.ok


def test_a_capability_not_declared_unsupported_is_required(site: Site) -> None:
    report = run(install(site, "claims-fused", NO_FUSED_POLICY))
    assert [r.check for r in report.failures] == ["fused_optimizers"]


def test_an_unknown_capability_name_fails_the_plugin_as_it_loads_naming_the_known_ones(site: Site) -> None:
    name = install(site, "typo", REFERENCE_POLICY, unsupported={"lbfgs-closure": "no closures"})
    match = r"No installed backend is named 'typo'.*unknown capabilities \['lbfgs-closure'\].*'lbfgs_closure'"
    with pytest.raises(mixprec.BackendNotFoundError, match=match):
        Suite(name)


def test_an_unknown_capability_name_in_a_contract_fails_the_plugin_as_it_loads(site: Site) -> None:
    declared = {"my-bf16": "Contract('bfloat16', autocast=True, unsupported={'fused': 'no'})"}
    name = install(site, "typo", OWN_PRECISION_POLICY, precisions=("my-bf16",), contracts=declared)
    with pytest.raises(mixprec.BackendNotFoundError, match=r"Invalid Contract: unknown capabilities \['fused'\]"):
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
    cases = Suite("core", precision="32-true", strategy="none").cases
    contract = mixprec.STANDARD_CONTRACTS["32-true"]
    plain = [c for c in CHECKS if c not in FSDP_CHECKS]
    expected = [f"32-true:{c.name}" for c in plain if "fabric" in c.targets and c.applies(contract)]
    expected += [f"trainer/32-true:{c.name}" for c in plain if "trainer" in c.targets and c.applies(contract)]
    assert [case.id for case in cases] == expected
    assert "32-true:loss_scaled" not in expected


def test_the_check_names_are_unique() -> None:
    names = [c.name for c in CHECKS]
    assert len(set(names)) == len(names)


def test_every_check_is_written_down_under_the_promise_it_holds_an_object_to() -> None:
    def documented(check: Check) -> set[str]:
        # The module-conversion checks are written down in their own module, which the contract docs point to.
        docs = (mixprec.testing.__doc__ or "") + (sys.modules[check.function.__module__].__doc__ or "")
        return set(re.findall(r"``(\w+)``", docs))

    assert [c.name for c in CHECKS if c.name not in documented(c)] == []


def test_every_check_says_in_one_line_what_it_promises() -> None:
    assert [c.name for c in CHECKS if not c.summary.endswith(".")] == []


def test_a_failing_check_is_reported_with_what_the_object_did_and_what_to_change(site: Site) -> None:
    policy = broken_policy("def convert_module(self, module):\n    return module.to(torch.bfloat16)")
    report = run(install(site, "half-weights", policy), precision="bf16-mixed")
    expected = (
        "FAILED  parameter_dtype: after convert_module the parameters are ['torch.bfloat16']; the contract's"
        " parameter_dtype is torch.float32: convert_module must cast the module with module.to(dtype)"
    )
    assert expected in str(report)


def test_the_report_says_where_each_contract_comes_from(site: Site) -> None:
    declared = {"my-bf16": "Contract('bfloat16', autocast=True)"}
    name = install(site, "own", OWN_PRECISION_POLICY, precisions=("my-bf16", "bf16-mixed"), contracts=declared)
    report = run(name)
    lines = str(report).splitlines()
    assert "my-bf16 (available; contract: declared)" in lines
    assert "bf16-mixed (available; contract: standard)" in lines
    precisions = json.loads(report.to_json())["precisions"]
    assert {p: entry["contract"] for p, entry in precisions.items()} == {
        "my-bf16": "declared",
        "bf16-mixed": "standard",
    }
