"""The reference backends pass the suite: mixprec-cpu and the example through the library call, the core through
the pytest class, and mixprec-cuda and mixprec-mps skip honestly where their device is absent."""

from __future__ import annotations

import pytest

import mixprec
from mixprec.testing import ConformanceTests, run


@pytest.mark.slow
def test_the_cpu_backend_passes_every_check_of_every_precision_it_offers() -> None:
    report = run("cpu")
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)
    assert {r.precision for r in report.results} == {"bf16-mixed", "16-mixed", "bf16-true", "16-true"}


@pytest.mark.slow
def test_the_example_backend_passes_every_fabric_check_but_the_capability_it_declares_unsupported() -> None:
    report = run("sr", target="fabric")
    assert [(r.check, r.outcome) for r in report.results if r.outcome != "passed"] == [("lbfgs_closure", "skipped")]


@pytest.mark.parametrize("backend", ["cuda", "mps"])
def test_a_gpu_backend_without_its_device_here_fails_nothing_and_verifies_nothing_but_its_contracts(
    backend: str,
) -> None:
    if mixprec.available(backend) and any(r.status == "available" for r in mixprec.available(backend)):
        pytest.skip(f"a {backend} device is here: the check runs for real in its tox env")
    report = run(backend)
    assert report.ok, str(report)
    assert {r.outcome for r in report.results if r.check != "contract_declared"} == {"skipped"}


class TestCoreConformance(ConformanceTests):
    """The core's "true" precisions on the CPU, as a backend author's test module would check them."""

    backend = "core"
