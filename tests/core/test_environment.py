"""The MIXPREC_* variables that steer loading: strict mode, autoload, the allow- and deny-lists, booleans."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mixprec
from mixprec._registry import registry
from mixprec._settings import env_flag
from tests.core.throwaway import FAKE_DEVICE, backend, install_backend, ledger_events, plugin, policy
from tests.distributions import Site

BOOLEAN_VARIABLES = ("MIXPREC_STRICT", "MIXPREC_DISABLE_PLUGIN_AUTOLOAD")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _install_plugin(site: Site, name: str, **sources: str) -> None:
    """Install ``tw-NAME`` with plugin NAME (package tw_NAME) from ``sources`` (plugin=..., policy=...)."""
    ledger_events(site)
    modules = {f"tw_{name}": sources["plugin"]}
    if "policy" in sources:
        modules[f"tw_{name}.policy"] = sources["policy"]
    site.install(f"tw-{name}", entry_points={name: f"tw_{name}"}, modules=modules)


def _faulty_policy(site: Site, source: str) -> None:
    _install_plugin(site, "faulty", plugin=plugin(backend("faulty", policy="tw_faulty.policy")), policy=source)


STRICT_CASES: dict[str, tuple[Callable[[Site], None], str, str]] = {
    "import-error": (
        lambda site: _install_plugin(site, "broken", plugin=plugin(body="raise ImportError('nope')")),
        "broken",
        "tw-broken",
    ),
    "hook-raises": (
        lambda site: _install_plugin(site, "broken", plugin=plugin(hook="raise RuntimeError('nope')")),
        "broken",
        "tw-broken",
    ),
    "malformed-backend": (
        lambda site: _install_plugin(
            site, "broken", plugin=plugin(hook="return [mixprec.Backend('X', 'cpu', (), '')]")
        ),
        "broken",
        "tw-broken",
    ),
    "plugin-name-clash": (
        lambda site: [
            _install_plugin(site, "twin", plugin=plugin(hook="return []")),
            site.install("tw-twin2", entry_points={"twin": "tw_twin2"}, modules={"tw_twin2": plugin(hook="return []")}),
        ],
        "twin",
        "tw-twin2",
    ),
    "backend-name-clash": (
        lambda site: [
            _install_plugin(site, "aaa", plugin=plugin(backend("shared", policy="p"))),
            _install_plugin(site, "bbb", plugin=plugin(backend("shared", policy="p"))),
        ],
        "bbb",
        "tw-bbb",
    ),
    "policy-import-error": (lambda site: _faulty_policy(site, "raise ImportError('nope')"), "faulty", "tw-faulty"),
    "policy-availability-raises": (
        lambda site: _faulty_policy(site, policy().replace("    status, reason =", "    1 / 0\n    status, reason =")),
        "faulty",
        "tw-faulty",
    ),
}


@pytest.mark.parametrize("case", STRICT_CASES, ids=list(STRICT_CASES))
def test_strict_mode_turns_each_failure_into_an_error_naming_plugin_and_distribution(
    site: Site, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    install, plugin_name, distribution = STRICT_CASES[case]
    install(site)
    monkeypatch.setenv("MIXPREC_STRICT", "1")

    with pytest.raises(mixprec.PluginError, match="MIXPREC_STRICT") as raised:
        mixprec.available()

    assert f"plugin {plugin_name!r}" in str(raised.value)
    assert f"distribution {distribution} " in str(raised.value)


def test_strict_mode_is_silent_when_every_plugin_works(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    install_backend(site, "good")
    monkeypatch.setenv("MIXPREC_STRICT", "yes")

    assert mixprec.get_precision("bf16-mixed", FAKE_DEVICE).mixprec_backend == "good"
    assert all(r.status != "failed" for r in mixprec.available())


def test_disabled_autoload_loads_and_imports_no_plugin(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    events = ledger_events(site)
    install_backend(site, "alpha")
    monkeypatch.setenv("MIXPREC_DISABLE_PLUGIN_AUTOLOAD", "1")

    assert {r.backend for r in mixprec.available()} == {"core"}
    assert mixprec.get_precision("32-true", "cpu").mixprec_backend == "core"
    with pytest.raises(mixprec.BackendNotFoundError, match="mixprec-cpu is installed but not loaded"):
        mixprec.get_precision("bf16-mixed", "cpu")
    assert events == []
    assert "tw_alpha" not in sys.modules
    assert ("alpha", "MIXPREC_DISABLE_PLUGIN_AUTOLOAD is set") in {
        (p.name, why) for p, why in registry.snapshot().skipped
    }


def test_allow_list_loads_only_the_plugins_it_names(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    events = ledger_events(site)
    install_backend(site, "alpha")
    install_backend(site, "beta")
    monkeypatch.setenv("MIXPREC_PLUGINS", "alpha")

    assert {r.backend for r in mixprec.available()} == {"core", "alpha"}
    assert events == [("import", "tw_alpha"), ("hook", "tw_alpha")]
    assert "tw_beta" not in sys.modules
    assert ("beta", "not listed in MIXPREC_PLUGINS") in {(p.name, why) for p, why in registry.snapshot().skipped}


def test_allow_listed_plugin_that_is_not_installed_is_reported(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    install_backend(site, "alpha")
    monkeypatch.setenv("MIXPREC_PLUGINS", "alpha, ghost")

    with pytest.warns(mixprec.PrecisionWarning, match="ghost"):
        failed = {r.plugin: r.reason for r in mixprec.available() if r.status == "failed"}

    assert failed == {"ghost": "MIXPREC_PLUGINS names it, but no installed distribution provides it"}


def test_block_list_never_imports_the_plugins_it_names(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    events = ledger_events(site)
    install_backend(site, "alpha")
    install_backend(site, "beta")
    monkeypatch.setenv("MIXPREC_BLOCK", "beta")

    backends = {r.backend for r in mixprec.available()}

    assert {"alpha", "cpu"} <= backends
    assert "beta" not in backends
    assert ("import", "tw_beta") not in events
    assert "tw_beta" not in sys.modules
    assert ("beta", "blocked by MIXPREC_BLOCK") in {(p.name, why) for p, why in registry.snapshot().skipped}


def test_block_list_wins_over_allow_list(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    install_backend(site, "alpha")
    install_backend(site, "beta")
    monkeypatch.setenv("MIXPREC_PLUGINS", "alpha,beta")
    monkeypatch.setenv("MIXPREC_BLOCK", "beta")

    records = mixprec.available()

    assert {r.backend for r in records} == {"core", "alpha"}
    assert "tw_beta" not in sys.modules


def _any_case(words: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).flatmap(
        lambda word: st.tuples(*(st.sampled_from((c.lower(), c.upper())) for c in word)).map("".join)
    )


# What an environment variable can hold: no NUL, no lone surrogates.
_ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))


@given(name=st.sampled_from(BOOLEAN_VARIABLES), value=_any_case(TRUE_WORDS))
def test_boolean_variables_read_1_true_yes_on_in_any_case_as_true(name: str, value: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(name, value)
        assert env_flag(name) is True


@given(name=st.sampled_from(BOOLEAN_VARIABLES), value=_any_case(FALSE_WORDS))
def test_boolean_variables_read_0_false_no_off_in_any_case_as_false(name: str, value: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(name, value)
        assert env_flag(name) is False


@given(
    name=st.sampled_from(BOOLEAN_VARIABLES),
    value=_ENV_TEXT.filter(lambda v: v.strip() and v.strip().lower() not in TRUE_WORDS + FALSE_WORDS),
)
def test_boolean_variables_reject_anything_else_naming_the_variable(name: str, value: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(name, value)
        with pytest.raises(mixprec.PrecisionError) as raised:
            env_flag(name)
    assert name in str(raised.value)


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_empty_boolean_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MIXPREC_STRICT", value)

    assert env_flag("MIXPREC_STRICT") is False


def test_invalid_boolean_variable_stops_discovery_with_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPREC_DISABLE_PLUGIN_AUTOLOAD", "sometimes")

    with pytest.raises(mixprec.PrecisionError, match="MIXPREC_DISABLE_PLUGIN_AUTOLOAD='sometimes' is not a boolean"):
        mixprec.get_precision("32-true", "cpu")
