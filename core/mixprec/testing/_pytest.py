"""The conformance suite as a pytest test class, for a backend author's own test run.

A class to subclass rather than a pytest plugin: it needs no option on the command line, no entry
point and no configuration, it runs wherever the author's tests run, and it costs nothing to pytest
runs that do not use it. pytest calls a class's ``pytest_generate_tests``, which turns the
:class:`~mixprec.testing.Suite`'s cases into one test each, with the same skips and failures as
``mixprec check``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mixprec.testing._base import CheckFailed, CheckSkipped
from mixprec.testing._suite import Case, Suite

if TYPE_CHECKING:
    import pytest

__all__ = ["ConformanceTests"]


class ConformanceTests:
    """Subclass in a test module and name the backend; pytest runs one test per precision and check::

        from mixprec.testing import ConformanceTests

        class TestConformance(ConformanceTests):
            backend = "mine"

    Optionally set ``device`` (e.g. ``"cuda:1"``; default: the backend's device type), ``precision``
    (default: every precision the backend offers), ``target`` (``"fabric"`` or ``"trainer"``; default:
    both) and ``strategy`` (``"fsdp"``, or ``"none"`` for the ordinary strategies' objects; default: all).
    A check the backend lists in ``Backend.expected_failed_checks`` is a strict ``xfail`` with the
    backend's reason: its failure is expected, and its passing fails.
    """

    backend: ClassVar[str]
    device: ClassVar[str | None] = None
    precision: ClassVar[str | None] = None
    target: ClassVar[str | None] = None
    strategy: ClassVar[str | None] = None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "conformance_case" not in metafunc.fixturenames:
            return
        backend = getattr(self, "backend", None)
        if not isinstance(backend, str):
            raise TypeError(f"{type(self).__name__} must set backend = '<name>', the backend to check")
        import pytest

        cases = Suite(backend, self.device, self.precision, self.target, self.strategy).cases
        params = [
            pytest.param(case, id=case.id, marks=_expected_failure(case) if case.expected_failure else ())
            for case in cases
        ]
        metafunc.parametrize("conformance_case", params)

    def test_conformance(self, conformance_case: Case) -> None:
        import pytest

        failure = None
        try:
            conformance_case.execute()
        except CheckSkipped as exc:
            pytest.skip(str(exc))
        except CheckFailed as exc:
            failure = f"{conformance_case.check.summary}\n{exc}"
        if failure is not None:  # raised outside the handler, so pytest shows no chained exception
            pytest.fail(failure, pytrace=False)


def _expected_failure(case: Case) -> pytest.MarkDecorator:
    import pytest

    return pytest.mark.xfail(strict=True, reason=f"expected failure: {case.expected_failure}")
