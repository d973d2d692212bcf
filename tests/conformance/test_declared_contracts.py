"""A backend's own precision: its declared contract is checked like a standard one, and no contract fails.

Each backend here offers a precision of its own ("acme-..."), declared in its description
(``Backend(..., contracts={...})``), installed as a real distribution through a real entry point
and checked with the library call ``mixprec check`` makes. A contract that says what the object
does passes, conversion checks included; one that claims what the object does not do fails the
checks of that claim; a precision without a contract fails ``contract_declared``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mixprec import STANDARD_CONTRACTS, Contract, PluginError
from mixprec.testing import CHECKS, Report, run
from mixprec.testing import _conversion as conversion
from tests.cli_runs import run_cli
from tests.conformance.backends import install
from tests.distributions import Site

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

_POLICY = """
from mixprec import Availability
from mixprec.precision import AutocastPrecision
from mixprec_fp8 import _trainer
from mixprec_fp8.precision import Float8Precision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


def create(request):
{create}
    obj.precision = request.precision
    return obj
"""

#: The objects under the name of the backend's own precision: fp8-mixed's, and bf16-mixed's.
FLOAT8 = """
    if request.target == "trainer":
        obj = _trainer.Float8Precision(request.device.type)
    else:
        obj = Float8Precision(request.device.type)
"""
BFLOAT16 = """
    obj = AutocastPrecision("bf16-mixed", request.device.type)
"""

#: What fp8-mixed's objects do, declared as a backend's own precision.
FLOAT8_CONTRACT = (
    "Contract('bfloat16', autocast=True, converts_modules=('torch.nn.Linear',), matmul_dtype='float8_e4m3fn',"
    " dims_multiple=16)"
)
#: What bf16-mixed's objects do, and the same with a GradScaler they do not have.
BFLOAT16_CONTRACT = "Contract('bfloat16', autocast=True)"
SCALING_CONTRACT = "Contract('bfloat16', autocast=True, loss_scaling=True)"

CONVERSION_CHECKS = {check.name for check in CHECKS if check.function.__module__ == conversion.__name__}


def policy(create: str) -> str:
    return _POLICY.format(create=create.strip("\n"))


def checked(site: Site, name: str, create: str, contract: str | None, targets: tuple[str, ...] = ("fabric",)) -> Report:
    """The suite's report on backend ``name`` offering "acme-<name>" with ``contract`` (None: undeclared).

    The backend builds objects for ``targets`` and says so; the suite runs for those.
    """
    precision = f"acme-{name}"
    contracts = {} if contract is None else {precision: contract}
    install(site, name, policy(create), precisions=(precision,), contracts=contracts, targets=targets)
    return run(name, target=targets[0] if len(targets) == 1 else None)


def outcomes(report: Report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for result in report.results:
        found.setdefault(result.outcome, []).append(result.check)
    return found


@pytest.mark.slow
def test_a_declared_contract_that_says_what_the_object_does_passes_every_check(site: Site) -> None:
    report = checked(site, "bf16", BFLOAT16, BFLOAT16_CONTRACT)
    assert set(outcomes(report)) == {"passed"}, str(report)


@pytest.mark.slow
def test_a_declared_conversion_contract_is_held_to_the_conversion_checks_and_fp8s_objects_pass_them(
    site: Site,
) -> None:
    report = checked(site, "fp8", FLOAT8, FLOAT8_CONTRACT, targets=("fabric", "trainer"))
    assert set(outcomes(report)) == {"passed"}, str(report)
    assert set(outcomes(report)["passed"]) >= CONVERSION_CHECKS


@pytest.mark.slow
def test_a_declared_conversion_contract_fails_an_object_that_converts_nothing(site: Site) -> None:
    report = checked(site, "fake-fp8", BFLOAT16, FLOAT8_CONTRACT)
    assert {r.check for r in report.failures} == {
        "converts_eligible_layers",
        "converted_matmul_dtype",
        "fabric_setup_converts",
    }, str(report)


@pytest.mark.slow
def test_a_contract_claiming_loss_scaling_the_object_does_not_do_fails_the_scaling_checks(site: Site) -> None:
    report = checked(site, "claims-scaler", BFLOAT16, SCALING_CONTRACT)
    claimed = {"matches_request", "loss_scaled", "nonfinite_step_skipped", "incompatible_state_dict"}
    assert claimed <= {r.check for r in report.failures}, str(report)
    (mismatch,) = [r for r in report.failures if r.check == "matches_request"]
    assert "scales the loss, which needs a torch.amp.GradScaler" in mismatch.detail


def test_a_non_standard_precision_without_a_contract_fails_contract_declared_and_nothing_else_runs(
    site: Site,
) -> None:
    report = checked(site, "undeclared", BFLOAT16, None)
    assert [(r.check, r.outcome) for r in report.results] == [("contract_declared", "failed")]
    assert "Backend(..., contracts={'acme-undeclared': Contract(" in report.results[0].detail


def test_mixprec_check_of_an_undeclared_precision_exits_1(site: Site) -> None:
    install(site, "undeclared", policy(BFLOAT16), precisions=("acme-undeclared",))
    ran = run_cli(["check", "undeclared", "--json"])
    report: dict[str, Any] = json.loads(ran.out)
    assert (ran.code, report["ok"], report["failed"], report["passed"]) == (1, False, 1, 0)


def test_fp8_mixed_converts_linear_layers_whose_dimensions_are_multiples_of_16() -> None:
    fp8 = STANDARD_CONTRACTS["fp8-mixed"]
    assert (fp8.converts_modules, fp8.matmul_dtype, fp8.dims_multiple) == (("torch.nn.Linear",), "float8_e4m3fn", 16)


def test_a_contract_converts_every_layer_of_its_classes_unless_it_declares_a_multiple() -> None:
    assert Contract("bfloat16", converts_modules=("torch.nn.Linear",)).dims_multiple == 1


@pytest.mark.parametrize("multiple", [0, -16, 1.5, True, "16"])
def test_a_contract_with_a_multiple_that_is_not_a_positive_int_is_a_plugin_error(multiple: Any) -> None:
    with pytest.raises(PluginError, match=f"dims_multiple {multiple!r} must be a positive int"):
        Contract("bfloat16", dims_multiple=multiple)


#: The example backend of docs/new-precisions.md: its fenced blocks marked project="acme-fp8", by title.
GUIDE = Path(__file__).parents[2] / "docs" / "new-precisions.md"
_EXAMPLE = re.compile(r'^```python title="(?P<title>[^"]+)" project="acme-fp8"\n(?P<body>.*?)^```$', re.M | re.S)


def example_files() -> dict[str, str]:
    return {match["title"]: match["body"] for match in _EXAMPLE.finditer(GUIDE.read_text())}


def test_the_guide_shows_the_example_backends_plugin_and_policy() -> None:
    assert sorted(example_files()) == ["acme_fp8/__init__.py", "acme_fp8/policy.py"]


@pytest.mark.slow
def test_the_guides_example_of_a_precision_of_ones_own_passes_every_check(site: Site) -> None:
    files = example_files()
    site.install(
        "acme-fp8",
        entry_points={"acme": "acme_fp8"},
        modules={"acme_fp8": files["acme_fp8/__init__.py"], "acme_fp8.policy": files["acme_fp8/policy.py"]},
    )
    report = run("acme")
    assert set(outcomes(report)) == {"passed"}, str(report)
    assert set(outcomes(report)["passed"]) >= CONVERSION_CHECKS
