"""`mixprec check`, run in-process: exit status, readable report, JSON."""

from __future__ import annotations

import json

import pytest

from mixprec import cli
from tests.conformance.backends import REFERENCE_POLICY, broken_policy, install
from tests.distributions import Site


def test_check_of_a_backend_whose_device_is_absent_exits_0_and_reports_every_check_skipped(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = REFERENCE_POLICY.replace("return 1", "return 0")
    install(site, "fake-cuda", policy, precisions=("bf16-mixed", "16-mixed"), device_type="cuda")
    assert cli.main(["check", "fake-cuda"]) == 0
    out = capsys.readouterr().out
    results = [line for line in out.splitlines() if line.startswith("  ") and "contract_declared" not in line]
    assert len(results) > 40
    assert all(line.startswith("  skipped") and "no cuda device here" in line for line in results)
    assert out.rstrip().endswith("nothing was verified on cuda here beyond the contracts (see the reasons above)")


def test_check_exits_1_and_names_the_failing_check(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    methods = """
    def convert_input(self, data):
        return apply_to_collection(data, torch.Tensor, lambda tensor: tensor.to(torch.bfloat16))
    """
    install(site, "casts-integers", broken_policy(methods))
    assert cli.main(["check", "casts-integers", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], [r["check"] for r in report["results"] if r["outcome"] == "failed"]) == (
        False,
        ["convert_input"],
    )


def test_check_of_an_unknown_backend_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "nope"]) == 2
    assert "No installed backend is named 'nope'" in capsys.readouterr().err
