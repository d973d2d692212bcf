"""The GradScaler-limit checks, each proven by a broken backend that fails it and nothing else.

Each backend is the control of ``tests/conformance/backends.py`` (Lightning's classes with
``ScalerGuard``, the scaler from ``make_scaler``) with one defect in how it builds the scaler or
loads its state, installed as a real distribution and checked as ``mixprec check`` checks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, Report, run
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site, site_on_path

SCALER_LIMIT_CHECKS = {c.name for c in CHECKS if c.function.__module__ == "mixprec.testing._checks_scaler_limits"}

#: name -> (methods, create, the checks it fails)
DEFECTS: dict[str, tuple[str, str, set[str]]] = {
    "options-unchecked": (
        "pass",
        """
        # torch's GradScaler takes anything; the values are only made plain floats and ints.
        options = {k: v if k == "growth_interval" else float(v) for k, v in request.options.items()}
        return Mixed("16-mixed", request.device.type, scaler=torch.amp.GradScaler(request.device.type, **options))
        """,
        {"scaler_options_out_of_range_refused"},
    ),
    "options-kept-as-given": (
        "pass",
        """
        from mixprec._scaler import check_options

        check_options(request.options)  # checked, but handed to torch as given: an int scale stays an int
        scaler = torch.amp.GradScaler(request.device.type, **request.options)
        return Mixed("16-mixed", request.device.type, scaler=scaler)
        """,
        {"scaler_options_at_their_limits_accepted"},
    ),
    "state-values-unchecked": (
        """
        def load_state_dict(self, state_dict):
            whole = isinstance(state_dict, dict) and set(state_dict) >= {"scale", "_growth_tracker"}
            if self.scaler is not None and whole:
                self.scaler.load_state_dict(state_dict)  # whole, but whatever its values
                return
            super().load_state_dict(state_dict)
        """,
        "return build(request)",
        # it also bypasses the mixin that restores the telemetry counters
        {"scaler_state_out_of_range_refused", "telemetry_restored_by_load_state_dict"},
    ),
    "state-limits-refused": (
        """
        def load_state_dict(self, state_dict):
            from mixprec import StateDictError

            scale = state_dict.get("scale") if isinstance(state_dict, dict) else None
            if isinstance(scale, float) and scale < 1.0:
                raise StateDictError("a scale below 1 is taken for a corrupt checkpoint")
            super().load_state_dict(state_dict)
        """,
        "return build(request)",
        {"scaler_state_at_its_limits_loaded"},
    ),
}


class Reports:
    """Each broken backend installed once and its suite run once, on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, name: str) -> Report:
        if name not in self.runs:
            methods, create, _ = DEFECTS[name]
            install(self.site, f"limits-{name}", broken_policy(methods, create), precisions=("16-mixed",))
            self.runs[name] = run(f"limits-{name}")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("limits"))) as site:
        yield Reports(site)


def test_the_checks_are_in_the_suite() -> None:
    assert {
        "scaler_options_out_of_range_refused",
        "scaler_options_at_their_limits_accepted",
        "scaler_state_out_of_range_refused",
        "scaler_state_at_its_limits_loaded",
    } == SCALER_LIMIT_CHECKS


def test_every_scaler_limit_check_is_proven_by_a_broken_backend() -> None:
    proven = set().union(*(fails for _, _, fails in DEFECTS.values()))
    assert proven >= SCALER_LIMIT_CHECKS
    assert proven - SCALER_LIMIT_CHECKS == {"telemetry_restored_by_load_state_dict"}


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFECTS)
def test_a_broken_backend_fails_exactly_the_check_named_for_its_defect(reports: Reports, name: str) -> None:
    report = reports.of(name)
    assert {r.check for r in report.failures} == DEFECTS[name][2], str(report)


@pytest.mark.slow
def test_the_failure_says_which_value_and_what_to_build(reports: Reports) -> None:
    (failure,) = reports.of("options-unchecked").failures
    assert "init_scale=inf" in failure.detail
    assert "mixprec.precision.make_scaler(request)" in failure.detail
