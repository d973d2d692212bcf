"""Name clashes: never settled silently; the first plugin by entry-point name, then distribution, keeps a name."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import mixprec
from mixprec._registry import registry
from tests.core.throwaway import FAKE_DEVICE, backend, ledger_events, plugin, policy
from tests.distributions import Site


def _failures() -> dict[tuple[str, str | None], str]:
    return {(f.plugin.name, f.plugin.distribution): f.error for f in registry.snapshot().failures}


def test_plugin_name_claimed_by_two_distributions_goes_to_the_first_distribution_by_name(site: Site) -> None:
    ledger_events(site)
    # Installed in the order that would favour the loser if installation order counted.
    for distribution, package in (("tw-beta", "twin_beta"), ("tw-alpha", "twin_alpha")):
        site.install(
            distribution,
            entry_points={"twin": package},
            modules={package: plugin(backend(package.replace("_", "-"), policy=f"{package}.policy"))},
        )

    with pytest.warns(mixprec.PrecisionWarning, match="twin"):
        backends = registry.snapshot().backends

    assert "twin-alpha" in backends
    assert "twin-beta" not in backends
    error = _failures()[("twin", "tw-beta")]
    assert "also claimed by plugin 'twin' from distribution tw-alpha" in error
    assert "twin_beta" not in sys.modules


def test_backend_name_described_by_two_plugins_goes_to_the_first_plugin_by_name(site: Site) -> None:
    ledger_events(site)
    for name in ("bbb", "aaa"):
        site.install(
            f"tw-{name}",
            entry_points={name: f"tw_{name}"},
            modules={
                f"tw_{name}": plugin(backend("shared", policy=f"tw_{name}.policy")),
                f"tw_{name}.policy": policy(),
            },
        )

    with pytest.warns(mixprec.PrecisionWarning, match="shared"):
        precision = mixprec.get_precision("bf16-mixed", FAKE_DEVICE)

    assert precision.mixprec_backend == "shared"
    assert registry.snapshot().backends["shared"].plugin.distribution == "tw-aaa"
    error = _failures()[("bbb", "tw-bbb")]
    assert "'shared' is already taken by plugin 'aaa' from distribution tw-aaa" in error


def test_entry_point_named_like_the_core_plugin_is_refused_and_never_imported(site: Site) -> None:
    ledger_events(site)
    site.install("tw-core", entry_points={"core": "tw_core"}, modules={"tw_core": plugin(hook="return []")})

    with pytest.warns(mixprec.PrecisionWarning, match="core"):
        error = _failures()[("core", "tw-core")]

    assert "also claimed by plugin 'core' from distribution mixprec" in error
    assert "tw_core" not in sys.modules
    assert mixprec.get_precision("32-true", "cpu").mixprec_backend == "core"


class InProcess:
    """A plugin object registered with ``mixprec.register``, as a notebook would."""

    def __init__(self, *backends: mixprec.Backend) -> None:
        self.backends = backends

    @mixprec.hookimpl
    def mixprec_backends(self) -> list[mixprec.Backend]:
        return list(self.backends)


@pytest.fixture
def inproc_policy(site: Site) -> str:
    site.install("tw-inproc", modules={"tw_inproc_policy": policy()})
    return "tw_inproc_policy"


def _backend(name: str, policy: str, **fields: Any) -> mixprec.Backend:
    return mixprec.Backend(name, FAKE_DEVICE, ("bf16-mixed",), policy, **fields)


def test_register_adds_a_plugin_in_process(inproc_policy: str) -> None:
    name = mixprec.register(InProcess(_backend("notebook", inproc_policy)), name="notebook-plugin")

    assert name == "notebook-plugin"
    assert mixprec.get_precision("bf16-mixed", FAKE_DEVICE).mixprec_backend == "notebook"
    assert registry.snapshot().backends["notebook"].plugin == registry.snapshot().plugins[-1]
    assert registry.snapshot().plugins[-1].distribution is None


def test_register_of_a_plugin_whose_backend_name_is_taken_raises_and_changes_nothing(inproc_policy: str) -> None:
    before = registry.snapshot()
    # The first backend is fine; the second clashes with the core's: neither may be registered.
    clashing = InProcess(_backend("fresh", inproc_policy), _backend("core", inproc_policy))

    with pytest.raises(mixprec.PluginError, match="'core' is already taken by plugin 'core'"):
        mixprec.register(clashing, name="clashing")

    assert registry.snapshot() is before
    assert "fresh" not in {r.backend for r in mixprec.available()}


def test_register_under_a_taken_plugin_name_raises_and_changes_nothing(inproc_policy: str) -> None:
    mixprec.register(InProcess(_backend("first", inproc_policy)), name="same")
    before = registry.snapshot()

    with pytest.raises(mixprec.PluginError, match="plugin name 'same' is already taken"):
        mixprec.register(InProcess(_backend("second", inproc_policy)), name="same")

    assert registry.snapshot() is before


def test_register_of_an_object_without_the_hook_raises_and_changes_nothing() -> None:
    before = registry.snapshot()

    with pytest.raises(mixprec.PluginError, match=r"no @mixprec\.hookimpl function named mixprec_backends"):
        mixprec.register(object(), name="hookless")

    assert registry.snapshot() is before
