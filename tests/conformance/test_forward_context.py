"""The check of ``_checks_forward_context``, proven by a broken backend that fails it alone.

Each backend is the control of ``tests/conformance/backends.py`` with one defect in ``forward_context``,
installed as a real distribution and checked as ``mixprec check`` checks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, Report, run
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site, site_on_path

FORWARD_CONTEXT_CHECKS = {c.name for c in CHECKS if c.function.__module__ == "mixprec.testing._checks_forward_context"}

#: name -> (precision, broken_policy keyword arguments, the checks it fails)
DEFECTS: dict[str, tuple[str, dict[str, str], set[str]]] = {
    "default-dtype-left": (
        "bf16-true",
        {
            "methods": """
            def forward_context(self):
                return contextlib.nullcontext()  # tensors made in forward stay float32
            """
        },
        {"forward_context_default_dtype"},
    ),
}


class Reports:
    """Each broken backend installed once and its suite run once, on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str) -> Report:
        if name not in self.runs:
            precision, broken, _ = DEFECTS[name]
            install(self.site, f"context-{name}", broken_policy(**broken), precisions=(precision,))
            self.runs[name] = run(f"context-{name}")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("context"))) as site:
        yield Reports(site)


def test_every_forward_context_check_is_proven_by_a_broken_backend() -> None:
    assert set().union(*(fails for _, _, fails in DEFECTS.values())) == FORWARD_CONTEXT_CHECKS


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFECTS)
def test_a_broken_backend_fails_exactly_the_check_named_for_its_defect(reports: Reports, name: str) -> None:
    report = reports.of(name)
    assert {r.check for r in report.failures} == DEFECTS[name][2], str(report)
