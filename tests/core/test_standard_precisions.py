"""Precisions beyond the six: fp8-mixed is standard but never "auto", and every answer says whose contract holds."""

from __future__ import annotations

import pytest

import mixprec
from mixprec._auto import PER_HARDWARE
from mixprec._inputs import PRECISION_DEVICE_TYPES, PRECISION_DISTRIBUTIONS
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
    monkeypatch.setitem(PRECISION_DEVICE_TYPES, "mixprec-fp8-not-installed", ("cpu",))

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
    assert explanation.rule.endswith(f"{NEVER}; {PER_HARDWARE}")
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


def test_the_install_hint_never_names_the_device_types_distribution_for_a_precision_it_does_not_offer(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backend with a precision of its own on the CPU; nothing serves "cuda" here. mixprec-cuda would not
    # serve "bf16-sr" either, so naming it would send the user to install something useless.
    install_backend(site, "srlike", device_type="cpu", precisions=("bf16-sr",), contracts={"bf16-sr": ACME["acme-fp4"]})
    monkeypatch.setenv("MIXPREC_PLUGINS", "srlike")

    with pytest.raises(mixprec.BackendNotFoundError) as raised:
        mixprec.get_precision("bf16-sr", "cuda")

    assert "mixprec-cuda" not in str(raised.value)
    assert "mixprec knows no distribution that offers it for device type 'cuda'" in str(raised.value)
    assert "Backends offering it on other devices: srlike (cpu)." in str(raised.value)


def test_the_install_hint_names_a_precisions_distribution_only_for_the_device_types_it_registers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIXPREC_PLUGINS", "cpu")  # mixprec-fp8 serves "cpu" and "cuda", not "mps"

    with pytest.raises(mixprec.BackendNotFoundError) as raised:
        mixprec.get_precision("fp8-mixed", "mps")

    assert "mixprec-fp8" not in str(raised.value)
    assert "mixprec-mps" not in str(raised.value)


def test_the_install_hint_still_names_the_device_types_distribution_for_what_it_offers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIXPREC_DISABLE_PLUGIN_AUTOLOAD", "1")

    with pytest.raises(mixprec.BackendNotFoundError, match="mixprec-cuda"):
        mixprec.get_precision("16-mixed", "cuda")


def test_explain_auto_says_it_is_chosen_per_hardware_not_per_model() -> None:
    explanation = mixprec.explain("auto", "cpu")
    assert "auto is chosen per hardware, not per model" in explanation.rule
    assert "auto is chosen per hardware, not per model" in str(explanation)
