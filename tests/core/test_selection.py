"""Selection among candidates: backend=, then MIXPREC_BACKEND, then status, priority and name; and "auto"."""

from __future__ import annotations

import pytest

import mixprec
from tests.core.throwaway import FAKE_DEVICE, install_backend
from tests.distributions import Site

SLOW = ("slow", "emulated here")
UNAVAILABLE = ("unavailable", "no fakeacc driver; use '32-true'")


def _chosen(precision: str = "bf16-mixed", **kwargs: str) -> str:
    backend: str = mixprec.get_precision(precision, FAKE_DEVICE, **kwargs).mixprec_backend
    return backend


def test_higher_priority_wins_among_available_candidates(site: Site) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)

    assert _chosen() == "high"


def test_available_candidate_wins_over_a_slow_one_whatever_the_priority(site: Site) -> None:
    install_backend(site, "emulated", priority=100, answers={"bf16-mixed": SLOW})
    install_backend(site, "native", priority=0)

    assert _chosen() == "native"


def test_slow_candidate_is_chosen_with_a_warning_when_nothing_is_available(site: Site) -> None:
    install_backend(site, "emulated", answers={"bf16-mixed": SLOW})
    install_backend(site, "absent", priority=100, answers={"bf16-mixed": UNAVAILABLE})

    with pytest.warns(mixprec.PrecisionWarning, match="slow here"):
        assert _chosen() == "emulated"


def test_the_slow_warning_names_what_auto_takes_on_the_device_instead(site: Site) -> None:
    install_backend(site, "fp16-emulated", answers={"16-mixed": SLOW})

    with pytest.warns(mixprec.PrecisionWarning, match="get_precision\\('auto'\\) takes 'bf16-mixed' here"):
        mixprec.get_precision("16-mixed", FAKE_DEVICE)


def test_equal_priorities_are_decided_by_backend_name_whatever_the_install_order(site: Site) -> None:
    for name in ("tie-c", "tie-a", "tie-b"):
        install_backend(site, name, priority=5)

    assert _chosen() == "tie-a"


def test_explicit_backend_wins_over_priority(site: Site) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)

    assert _chosen(backend="low") == "low"


def test_MIXPREC_BACKEND_wins_over_priority_when_it_names_a_candidate(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)
    monkeypatch.setenv("MIXPREC_BACKEND", "low")

    assert _chosen() == "low"


@pytest.mark.parametrize("named", ["cpu", "no-such-backend"], ids=["other-device", "unknown"])
def test_MIXPREC_BACKEND_is_ignored_when_it_names_no_candidate(
    site: Site, monkeypatch: pytest.MonkeyPatch, named: str
) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)
    monkeypatch.setenv("MIXPREC_BACKEND", named)

    assert _chosen() == "high"


def test_explicit_backend_wins_over_MIXPREC_BACKEND(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)
    monkeypatch.setenv("MIXPREC_BACKEND", "high")

    assert _chosen(backend="low") == "low"


def test_explicit_backend_that_cannot_run_here_is_an_error_with_its_reason(site: Site) -> None:
    install_backend(site, "absent", answers={"bf16-mixed": UNAVAILABLE})
    install_backend(site, "native")

    with pytest.raises(mixprec.BackendUnavailableError, match="no fakeacc driver; use '32-true'"):
        _chosen(backend="absent")


def test_explicit_unknown_backend_is_an_error_naming_the_closest_installed_one(site: Site) -> None:
    install_backend(site, "native")

    with pytest.raises(mixprec.BackendNotFoundError, match=r"Unknown backend 'nativ'.*Did you mean 'native'"):
        _chosen(backend="nativ")


def test_explain_shows_the_rule_and_every_candidate_with_why_it_was_passed_over(site: Site) -> None:
    install_backend(site, "absent", priority=100, answers={"bf16-mixed": UNAVAILABLE})
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)

    explanation = mixprec.explain("bf16-mixed", FAKE_DEVICE)

    assert (explanation.precision, explanation.backend) == ("bf16-mixed", "high")
    assert explanation.rule == (
        "backends for the device type before those for every device type; among them the first usable"
        " by status (available before slow), then priority (higher first), then name"
    )
    rows = {c.backend: (c.status, c.chosen, c.note) for c in explanation.candidates}
    assert rows == {
        "absent": ("unavailable", False, "cannot run here"),
        "low": ("available", False, "outranked by 'high'"),
        "high": ("available", True, ""),
    }
    text = str(explanation)
    assert "-> bf16-mixed  high" in text
    assert "no fakeacc driver" in text
    assert explanation.rule in text


def test_explain_with_an_explicit_backend_says_that_it_decided(site: Site) -> None:
    install_backend(site, "low", priority=1)
    install_backend(site, "high", priority=2)

    explanation = mixprec.explain("bf16-mixed", FAKE_DEVICE, backend="low")

    assert explanation.rule == "backend= names 'low'"
    assert {c.backend: c.note for c in explanation.candidates} == {"low": "", "high": "not the one backend= names"}


AUTO_CASES = {
    "bf16-available": ({}, "bf16-mixed", "acc"),
    "bf16-unavailable": ({"bf16-mixed": UNAVAILABLE}, "16-mixed", "acc"),
    "bf16-slow": ({"bf16-mixed": SLOW}, "16-mixed", "acc"),
    "both-slow": ({"bf16-mixed": SLOW, "16-mixed": SLOW}, "32-true", "core"),
    "both-unavailable": ({"bf16-mixed": UNAVAILABLE, "16-mixed": UNAVAILABLE}, "32-true", "core"),
    "slow-and-unavailable": ({"bf16-mixed": SLOW, "16-mixed": UNAVAILABLE}, "32-true", "core"),
}


@pytest.mark.parametrize("case", AUTO_CASES, ids=list(AUTO_CASES))
def test_auto_takes_bf16_mixed_then_16_mixed_then_32_true_by_availability(site: Site, case: str) -> None:
    answers, precision, backend = AUTO_CASES[case]
    install_backend(site, "acc", answers=answers)

    chosen = mixprec.get_precision("auto", FAKE_DEVICE)

    assert (chosen.precision, chosen.mixprec_backend) == (precision, backend)
    assert (mixprec.explain("auto", FAKE_DEVICE).precision, mixprec.explain(device=FAKE_DEVICE).backend) == (
        precision,
        backend,
    )


def test_explain_auto_says_what_happened_to_each_precision(site: Site) -> None:
    install_backend(site, "acc", answers={"bf16-mixed": SLOW})

    explanation = mixprec.explain("auto", FAKE_DEVICE)

    notes = {(c.precision, c.backend): (c.chosen, c.note) for c in explanation.candidates}
    assert notes == {
        ("bf16-mixed", "acc"): (False, "selected, but slower than fp32 here: auto passes it over"),
        ("16-mixed", "acc"): (True, ""),
        ("32-true", "core"): (False, "not needed: auto took '16-mixed'"),
    }
    assert explanation.rule.startswith("auto takes the first of bf16-mixed, 16-mixed, 32-true")


def test_auto_with_an_explicit_backend_uses_it_for_the_precisions_it_offers(site: Site) -> None:
    install_backend(site, "acc", priority=1)
    install_backend(site, "other", priority=2)

    assert _chosen("auto", backend="acc") == "acc"
    assert _chosen("auto") == "other"


def test_auto_with_an_explicit_backend_that_offers_none_of_its_precisions_is_an_error(site: Site) -> None:
    install_backend(site, "acc")

    with pytest.raises(mixprec.BackendNotFoundError, match="'cpu' offers none of the precisions 'auto'"):
        _chosen("auto", backend="cpu")
    with pytest.raises(mixprec.BackendNotFoundError, match="Unknown backend 'acx'"):
        _chosen("auto", backend="acx")


def test_a_backend_for_the_device_type_outranks_the_cores_fallback_even_when_slow(site: Site) -> None:
    install_backend(site, "honest", precisions=("16-true",), answers={"16-true": SLOW})

    with pytest.warns(mixprec.PrecisionWarning, match="slow"):
        precision = mixprec.get_precision("16-true", FAKE_DEVICE)

    assert precision.mixprec_backend == "honest"
    notes = {c.backend: c.note for c in mixprec.explain("16-true", FAKE_DEVICE).candidates}
    assert notes["core"] == "fallback: a backend for the device type offers it"


def test_the_cores_fallback_does_not_stand_in_for_a_backend_that_cannot_run_here(site: Site) -> None:
    install_backend(site, "absent", precisions=("16-true",), answers={"16-true": UNAVAILABLE})

    with pytest.raises(mixprec.BackendUnavailableError, match="no fakeacc driver"):
        mixprec.get_precision("16-true", FAKE_DEVICE)


def test_backend_core_still_selects_the_cores_true_precision_by_name(site: Site) -> None:
    install_backend(site, "honest", precisions=("16-true",), answers={"16-true": SLOW})

    assert mixprec.get_precision("16-true", FAKE_DEVICE, backend="core").mixprec_backend == "core"
