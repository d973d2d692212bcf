"""mixprec.unregister(name): undoes register() whole, forgets what was cached, and refuses anything else."""

from __future__ import annotations

import threading
import types

import pytest

import mixprec
from mixprec._registry import registry
from tests.core.throwaway import FAKE_DEVICE, policy
from tests.distributions import Site

POLICY = "unreg_policy"


@pytest.fixture
def in_process(site: Site) -> types.SimpleNamespace:
    """A plugin object, as a notebook registers it, describing two backends for the fake device type."""
    site.install("unreg-policy", modules={POLICY: policy()})

    def backends() -> list[mixprec.Backend]:
        return [
            mixprec.Backend("nb-a", FAKE_DEVICE, ("bf16-mixed",), POLICY),
            mixprec.Backend("nb-b", FAKE_DEVICE, ("16-mixed",), POLICY),
        ]

    return types.SimpleNamespace(__name__="notebook", mixprec_backends=mixprec.hookimpl(backends))


def _listed() -> set[str]:
    return {r.backend for r in mixprec.available()}


def test_unregister_removes_every_backend_of_the_plugin(in_process: types.SimpleNamespace) -> None:
    mixprec.register(in_process)
    assert {"nb-a", "nb-b"} <= _listed()
    mixprec.unregister("notebook")
    assert not {"nb-a", "nb-b"} & _listed()
    assert "notebook" not in {p.name for p in registry.snapshot().plugins}


def test_after_unregister_a_cached_choice_is_not_served(in_process: types.SimpleNamespace) -> None:
    mixprec.register(in_process)
    assert mixprec.get_precision("bf16-mixed", FAKE_DEVICE).mixprec_backend == "nb-a"
    mixprec.unregister("notebook")
    # No backend serves the fake device type any more, so it is not even a known device type.
    with pytest.raises(mixprec.DeviceError, match=f"Unknown device type '{FAKE_DEVICE}'"):
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)


def test_the_name_is_free_to_register_again(in_process: types.SimpleNamespace) -> None:
    mixprec.register(in_process)
    mixprec.unregister("notebook")
    assert mixprec.register(in_process) == "notebook"
    assert {"nb-a", "nb-b"} <= _listed()


def test_unregister_leaves_the_installed_backends_as_they_were(in_process: types.SimpleNamespace) -> None:
    before = {(r.backend, r.device_type, r.precision, r.status) for r in mixprec.available()}
    mixprec.register(in_process)
    mixprec.unregister("notebook")
    assert {(r.backend, r.device_type, r.precision, r.status) for r in mixprec.available()} == before


def test_a_name_never_registered_is_an_error_that_lists_the_registered_ones(
    in_process: types.SimpleNamespace,
) -> None:
    mixprec.register(in_process)
    snapshot = registry.snapshot()
    with pytest.raises(mixprec.PluginError, match=r"No plugin named 'notebok' was registered .*: 'notebook'\)"):
        mixprec.unregister("notebok")
    assert registry.snapshot() is snapshot


def test_unregistering_twice_is_an_error_the_second_time(in_process: types.SimpleNamespace) -> None:
    mixprec.register(in_process)
    mixprec.unregister("notebook")
    with pytest.raises(mixprec.PluginError, match=r"registered with mixprec.register\(\): none"):
        mixprec.unregister("notebook")


@pytest.mark.parametrize("name", ["cpu", "core"])
def test_an_installed_plugin_cannot_be_unregistered_and_the_error_says_to_block_it(name: str) -> None:
    snapshot = registry.snapshot()
    with pytest.raises(mixprec.PluginError, match=f"MIXPREC_BLOCK={name}"):
        mixprec.unregister(name)
    assert registry.snapshot() is snapshot


def test_a_name_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="name must be a str, not int"):
        mixprec.unregister(3)  # type: ignore[arg-type]


def test_readers_see_the_plugin_whole_or_not_at_all_while_it_comes_and_goes(
    in_process: types.SimpleNamespace,
) -> None:
    seen: set[frozenset[str]] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(frozenset(registry.snapshot().backends) & {"nb-a", "nb-b"})

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(200):
            mixprec.register(in_process)
            mixprec.unregister("notebook")
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert seen <= {frozenset(), frozenset({"nb-a", "nb-b"})}
