"""The reference backends pass the suite: mixprec-cpu through the library call, the core through the pytest class."""

from __future__ import annotations

import pytest

from mixprec.testing import ConformanceTests, run


@pytest.mark.slow
def test_the_cpu_backend_passes_every_check_of_every_precision_it_offers() -> None:
    report = run("cpu")
    assert [r for r in report.results if r.outcome != "passed"] == [], str(report)
    assert {r.precision for r in report.results} == {"bf16-mixed", "16-mixed", "bf16-true", "16-true"}


class TestCoreConformance(ConformanceTests):
    """The core's "true" precisions on the CPU, as a backend author's test module would check them."""

    backend = "core"
