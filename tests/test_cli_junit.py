"""``mixprec check --junit-xml FILE``: the conformance suite's results as JUnit XML, for a vendor's CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixprec.cli import junit_xml
from mixprec.testing import Report, Result
from tests.cli_runs import ABSENT_DEVICE_POLICY, Ran, run_cli
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site


def _check(argv: list[str], path: Path) -> tuple[Ran, dict[str, Any], ET.Element]:
    """Run ``mixprec check ARGV --json --junit-xml PATH``: what it returned, its JSON report, the parsed XML."""
    ran = run_cli(["check", *argv, "--json", "--junit-xml", str(path)])
    return ran, json.loads(ran.out), ET.parse(path).getroot()


def test_a_failing_check_is_a_failure_with_its_message(site: Site, tmp_path: Path) -> None:
    install(site, "leaky", broken_policy("def convert_output(self, data):\n    return data"))
    ran, report, root = _check(["leaky"], tmp_path / "report.xml")
    assert ran.code == 1
    failed = next(r for r in report["results"] if r["outcome"] == "failed")
    case = next(c for c in root.iter("testcase") if c.get("name") == f"{failed['precision']}:{failed['check']}")
    failure = case.find("failure")
    assert failure is not None
    assert (failure.text, failure.get("message")) == (failed["detail"], failed["detail"].splitlines()[0])


def test_counts_and_testcases_match_the_report(site: Site, tmp_path: Path) -> None:
    install(site, "leaky", broken_policy("def convert_output(self, data):\n    return data"))
    _, report, root = _check(["leaky"], tmp_path / "report.xml")
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r["id"] for r in report["results"]]
    for element in (root, suite):
        assert int(element.get("tests", "")) == len(cases)
        assert int(element.get("failures", "")) == report["failed"] == len(suite.findall("testcase/failure"))
        skipped = report["skipped"] + report["xfailed"]
        assert int(element.get("skipped", "")) == skipped == len(suite.findall("testcase/skipped"))
        assert element.get("errors") == "0"
        assert float(element.get("time", "")) >= 0


def test_a_suite_is_named_after_the_command_that_reruns_it(site: Site, tmp_path: Path) -> None:
    install(site, "fake-cuda", ABSENT_DEVICE_POLICY, device_type="cuda")
    _, _, root = _check(["fake-cuda"], tmp_path / "report.xml")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "mixprec check fake-cuda --device cuda"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert (properties["backend"], properties["device"], properties["distribution"]) == (
        "fake-cuda",
        "cuda",
        "cf-fake-cuda",
    )


def test_an_absent_device_is_a_skip_with_the_reason_and_exits_0(site: Site, tmp_path: Path) -> None:
    install(site, "fake-cuda", ABSENT_DEVICE_POLICY, device_type="cuda")
    ran, report, root = _check(["fake-cuda"], tmp_path / "report.xml")
    assert ran.code == 0
    skips = list(root.iter("skipped"))
    assert len(skips) == report["skipped"] > 20
    assert all("cuda" in skip.get("message", "") for skip in skips)
    assert root.find("testsuite/testcase/failure") is None


def test_characters_xml_cannot_hold_are_escaped(site: Site, tmp_path: Path) -> None:
    install(
        site, "garbled", broken_policy("def convert_output(self, data):\n    raise RuntimeError('\\x1b[31mred\\x00')")
    )
    _, _, root = _check(["garbled", "--precision", "bf16-mixed"], tmp_path / "report.xml")
    messages = [f.get("message", "") for f in root.iter("failure")]
    assert any("\\x1b[31mred\\x00" in m for m in messages)


def test_a_junit_file_that_cannot_be_written_fails_before_the_suite_runs(site: Site, tmp_path: Path) -> None:
    install(site, "fake-cuda", ABSENT_DEVICE_POLICY, device_type="cuda")
    ran = run_cli(["check", "fake-cuda", "--junit-xml", str(tmp_path / "no" / "report.xml")])
    assert ran.code == 2
    assert ran.err.startswith(f"mixprec: error: --junit-xml {tmp_path / 'no' / 'report.xml'}: cannot write there")
    assert ran.out == ""


@given(st.text(), st.sampled_from(["passed", "failed", "skipped"]))
def test_any_detail_makes_a_document_that_parses(detail: str, outcome: Any) -> None:
    report = Report("b", "cpu", None, None, {}, (Result("bf16-mixed", "check", outcome, detail),))
    (case,) = ET.fromstring(junit_xml(report, 0.0)).iter("testcase")
    assert case.get("name") == "bf16-mixed:check"
    assert [child.tag for child in case] == {"passed": [], "failed": ["failure"], "skipped": ["skipped"]}[outcome]


@pytest.mark.parametrize("detail", ["plain", "a\nb\tc\r", "ünïcödé ✓ 𝄞"])
def test_text_xml_can_hold_is_kept_as_it_is(detail: str) -> None:
    report = Report("b", "cpu", None, None, {}, (Result("16-mixed", "check", "failed", detail),))
    failure = ET.fromstring(junit_xml(report, 0.0)).find("testsuite/testcase/failure")
    assert failure is not None
    # XML normalises a lone carriage return in text to a newline when it parses it.
    assert failure.text == detail.replace("\r", "\n")
