"""Precisions beyond the six: fp8-mixed is standard but never "auto", and every answer says whose contract holds."""

from __future__ import annotations

import pytest

import mixprec
from mixprec._inputs import PRECISION_DISTRIBUTIONS
from tests.core.throwaway import FAKE_DEVICE, install_backend
from tests.distributions import Site

UNAVAILABLE = ("unavailable", "fakeacc has no bfloat16")
NEVER = "fp8-mixed is never chosen by auto: whether it pays depends on the model's shapes; try `mixprec bench`"
ACME = {"acme-fp4": "mixprec.Contract('bfloat16', autocast=True)"}


def test_fp8_mixed_without_a_backend_serving_it_names_mixprec_fp8(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether or not mixprec-fp8 is installed here, it is not loaded: the error names it either way.
    monkeypatch.setenv("MIXPREC_PLUGINS", "cpu")

    with pytest.raises(mixprec.BackendNotFoundError, match="mixprec-fp8"):
        mixprec.get_precision("fp8-mixed", "cpu")


def test_a_precision_whose_distribution_is_not_installed_says_what_to_install(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_backend(site, "elsewhere", precisions=("fp8-mixed",))
    monkeypatch.setenv("MIXPREC_PLUGINS", "elsewhere")
    monkeypatch.setitem(PRECISION_DISTRIBUTIONS, "fp8-mixed", "mixprec-fp8-not-installed")

    with pytest.raises(mixprec.BackendNotFoundError) as raised:
        mixprec.get_precision("fp8-mixed", "cpu")

    assert str(raised.value) == (
        "No installed backend offers 'fp8-mixed' on cpu: pip install mixprec-fp8-not-installed."
        " Backends offering it on other devices: elsewhere (fakeacc)."
    )


def test_auto_never_picks_fp8_mixed_even_where_it_is_the_only_fast_precision(site: Site) -> None:
    install_backend(
        site,
        "acc",
        precisions=("fp8-mixed", "bf16-mixed", "16-mixed"),
        answers={"bf16-mixed": UNAVAILABLE, "16-mixed": UNAVAILABLE},
    )

    assert mixprec.get_precision("auto", FAKE_DEVICE).precision == "32-true"
    explanation = mixprec.explain("auto", FAKE_DEVICE)

    assert explanation.precision == "32-true"
    assert explanation.rule.endswith(NEVER)
    (fp8,) = (c for c in explanation.candidates if c.precision == "fp8-mixed")
    assert (fp8.backend, fp8.status, fp8.chosen) == ("acc", "available", False)
    assert fp8.note == f"never chosen by auto: {NEVER.split(': ', 1)[1]}"


def test_explain_auto_says_fp8_mixed_is_never_chosen_even_without_a_backend_for_it() -> None:
    assert NEVER in mixprec.explain("auto", "cpu").rule
    assert NEVER in str(mixprec.explain("auto", "cpu"))


def test_records_and_candidates_say_where_each_contract_comes_from(site: Site) -> None:
    install_backend(site, "acme", precisions=("bf16-mixed", "acme-fp4", "acme-x"), contracts=ACME)

    records = {r.precision: r.contract for r in mixprec.available(FAKE_DEVICE) if r.backend == "acme"}
    candidates = {p: mixprec.explain(p, FAKE_DEVICE).candidates[0].contract for p in records}

    assert records == {"bf16-mixed": "standard", "acme-fp4": "declared", "acme-x": "undeclared"}
    assert candidates == records
    assert "(declared contract)" in str(mixprec.explain("acme-fp4", FAKE_DEVICE))


def test_a_failed_plugins_record_has_no_contract(site: Site) -> None:
    from tests.core.throwaway import ledger_events, plugin

    ledger_events(site)
    site.install("tw-broken", entry_points={"broken": "tw_broken"}, modules={"tw_broken": plugin(body="1 / 0")})

    with pytest.warns(mixprec.PrecisionWarning):
        (failed,) = (r for r in mixprec.available() if r.status == "failed")

    assert failed.contract == ""
