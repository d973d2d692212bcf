"""Expected failures as data: Backend.expected_failed_checks, reported strictly by the report, the CLI and pytest."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import mixprec
from mixprec.testing import Suite, run
from tests.cli_runs import run_cli
from tests.conformance.backends import CONTROL_POLICY, broken_policy, install
from tests.distributions import Site

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

#: A fused optimizer refused: its one defect, which fused_optimizers catches.
NO_FUSED = broken_policy(
    """
    def optimizer_step(self, optimizer, **kwargs):
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            raise NotImplementedError("fused optimizers are not supported")
        return super().optimizer_step(optimizer, **kwargs)
    """
)
REASON = "no fused kernels on this accelerator yet"


def _expecting(site: Site, name: str, policy: str, expected: dict[str, str]) -> str:
    return install(site, name, policy, precisions=("32-true",), expected_failed_checks=expected)


def test_a_check_listed_that_fails_is_an_expected_failure_with_the_reason(site: Site) -> None:
    report = run(_expecting(site, "no-fused", NO_FUSED, {"fused_optimizers": REASON}), target="fabric")
    (result,) = [r for r in report.results if r.check == "fused_optimizers"]
    assert result.outcome == "xfailed"
    assert result.detail.startswith(f"expected failure: {REASON} (it failed: ")
    assert report.ok
    assert report.summary().endswith(", 1 expected failures")


def test_a_check_listed_that_passes_is_a_failure_saying_it_unexpectedly_passed(site: Site) -> None:
    report = run(_expecting(site, "passes", CONTROL_POLICY, {"fused_optimizers": REASON}), target="fabric")
    (result,) = report.failures
    assert (result.check, result.outcome) == ("fused_optimizers", "failed")
    assert result.detail.startswith("unexpectedly passed: backend 'passes' lists 'fused_optimizers'")
    assert "remove it from that list" in result.detail
    assert not report.ok


def test_an_expected_failure_holds_for_every_target_the_check_runs_for(site: Site) -> None:
    name = _expecting(site, "both", CONTROL_POLICY, {"forward_autocast": "kept"})
    failed = {r.id for r in run(name).failures}
    assert failed == {"32-true:forward_autocast", "trainer/32-true:forward_autocast"}


def test_a_name_that_is_no_check_is_refused_when_the_suite_loads_the_backend(site: Site) -> None:
    name = _expecting(site, "typo", CONTROL_POLICY, {"fused_optimizer": REASON})
    with pytest.raises(mixprec.PluginError, match=r"lists \['fused_optimizer'\] in expected_failed_checks"):
        Suite(name)


def test_mixprec_check_of_a_backend_listing_no_check_exits_2(site: Site) -> None:
    ran = run_cli(["check", _expecting(site, "typo", CONTROL_POLICY, {"fused_optimizer": REASON})])
    assert ran.code == 2
    assert "not checks of mixprec.testing" in ran.err


@pytest.mark.parametrize("value", [{"fused_optimizers": ""}, {"fused_optimizers": 1}, ["fused_optimizers"]])
def test_expected_failures_that_are_not_names_with_reasons_are_a_plugin_error(value: Any) -> None:
    with pytest.raises(mixprec.PluginError, match=r"expected_failed_checks .* must map check names to non-empty"):
        mixprec.Backend("b", "cpu", ("32-true",), "pkg.policy", expected_failed_checks=value)


@pytest.mark.parametrize(("policy", "code"), [(NO_FUSED, 0), (CONTROL_POLICY, 1)], ids=["fails", "passes"])
def test_json_junit_and_the_exit_status_agree_on_an_expected_failure(
    site: Site, tmp_path: Path, policy: str, code: int
) -> None:
    name = _expecting(site, "agree", policy, {"fused_optimizers": REASON})
    junit = tmp_path / "check.xml"
    ran = run_cli(["check", name, "--target", "fabric", "--json", "--junit-xml", str(junit)])
    report = json.loads(ran.out)
    (result,) = [r for r in report["results"] if r["check"] == "fused_optimizers"]
    (case,) = [c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "32-true:fused_optimizers"]
    assert ran.code == code
    assert report["ok"] is (code == 0)
    if code == 0:
        assert (result["outcome"], report["xfailed"]) == ("xfailed", 1)
        skipped = case.find("skipped")
        assert skipped is not None
        assert skipped.get("type") == "pytest.xfail"
    else:
        assert (result["outcome"], report["failed"]) == ("failed", 1)
        assert case.find("failure") is not None


@pytest.mark.parametrize(("policy", "outcome"), [(NO_FUSED, "xfailed"), (CONTROL_POLICY, "failed")])
def test_the_pytest_class_marks_an_expected_failure_as_a_strict_xfail(
    site: Site, pytester: pytest.Pytester, policy: str, outcome: str
) -> None:
    name = _expecting(site, "strict", policy, {"fused_optimizers": REASON})
    pytester.makepyfile(
        test_conformance=textwrap.dedent(
            f"""
            from mixprec.testing import ConformanceTests


            class TestConformance(ConformanceTests):
                backend = {name!r}
                target = "fabric"
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "fused_optimizers and not clipping")
    result.assert_outcomes(**{outcome: 1})
