"""What get_precision hands out: a new object per call, recording the backend that made it."""

from __future__ import annotations

import pytest

import mixprec
from tests.core.throwaway import FAKE_DEVICE, install_backend
from tests.distributions import Site


def test_each_call_returns_a_new_object_with_its_own_scaler(site: Site) -> None:
    install_backend(site, "acc")

    first = mixprec.get_precision("16-mixed", FAKE_DEVICE)
    second = mixprec.get_precision("16-mixed", FAKE_DEVICE)

    assert first is not second
    assert first.scaler is not None
    assert first.scaler is not second.scaler


@pytest.mark.parametrize(("precision", "backend"), [("bf16-mixed", "acc"), ("32-true", "core"), ("64-true", "core")])
def test_object_records_the_backend_that_made_it(site: Site, precision: str, backend: str) -> None:
    install_backend(site, "acc")

    assert mixprec.get_precision(precision, FAKE_DEVICE).mixprec_backend == backend
