"""register() and discovery refuse what a plugin gets wrong with a PluginError: no raw exception, no deadlock."""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mixprec
from mixprec._registry import registry
from tests.core.throwaway import FAKE_DEVICE, backend, ledger_events, plugin
from tests.distributions import Site

#: How long a call may take before the test calls it a deadlock.
PATIENCE_S = 20


def _backend(name: str = "inproc") -> mixprec.Backend:
    return mixprec.Backend(name, FAKE_DEVICE, ("bf16-mixed",), "tw_nowhere.policy")


def _plugin(hook: Callable[[], Any], name: str | None = "inproc") -> types.SimpleNamespace:
    found = types.SimpleNamespace(mixprec_backends=mixprec.hookimpl(hook))
    if name is not None:
        found.__name__ = name
    return found


def _within_patience(call: Callable[[], Any]) -> Any:
    """``call()``'s result or exception, failing the test instead of hanging if it deadlocks."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert not thread.is_alive(), f"the call did not return within {PATIENCE_S} s: a deadlock"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _backends() -> set[str]:
    return set(registry.snapshot().backends)


def test_a_hook_whose_result_raises_while_iterated_is_a_plugin_error_and_registers_nothing() -> None:
    def backends() -> Iterator[mixprec.Backend]:
        yield _backend()
        raise OSError("device table unreadable")

    with pytest.raises(mixprec.PluginError, match="iterating what its mixprec_backends hook returned raised OSError"):
        mixprec.register(_plugin(backends))

    assert "inproc" not in _backends()


def test_an_installed_hook_whose_result_raises_while_iterated_is_a_reported_failure(site: Site) -> None:
    ledger_events(site)
    hook = f"def gen():\n    yield {backend('gen', policy='p')}\n    raise KeyError('boom')\nreturn gen()"
    site.install("tw-gen", entry_points={"gen": "tw_gen"}, modules={"tw_gen": plugin(hook=hook)})

    with pytest.warns(mixprec.PrecisionWarning, match="gen"):
        failed = {r.plugin: r.reason for r in mixprec.available() if r.status == "failed"}

    assert "raised KeyError: 'boom'" in failed["gen"]


def test_a_name_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        mixprec.register(_plugin(lambda: [_backend()]), name=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("dunder", [5, b"inproc", ["inproc"]], ids=["int", "bytes", "list"])
def test_a_plugin_whose_dunder_name_is_not_a_str_is_refused(dunder: object) -> None:
    found = _plugin(lambda: [_backend()], name=None)
    found.__name__ = dunder

    with pytest.raises(mixprec.PluginError, match=r"its __name__ is a .*, not a str; pass name="):
        mixprec.register(found)

    assert "inproc" not in _backends()


def test_a_plugin_whose_dunder_name_raises_is_refused() -> None:
    class Plugin:
        @property
        def __name__(self) -> str:  # type: ignore[override]
            raise RuntimeError("no name today")

        @mixprec.hookimpl
        def mixprec_backends(self) -> list[mixprec.Backend]:
            return [_backend()]

    with pytest.raises(mixprec.PluginError, match="reading its __name__ raised RuntimeError"):
        mixprec.register(Plugin())


def test_a_plugin_with_a_str_subclass_name_is_registered_under_the_plain_name() -> None:
    class Name(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    registered = mixprec.register(_plugin(lambda: [_backend()], name=None), name=Name("inproc"))

    assert type(registered) is str
    assert "inproc" in _backends()


def test_none_is_not_a_plugin() -> None:
    with pytest.raises(mixprec.PluginError, match="Cannot register plugin"):
        mixprec.register(None)


CALLBACKS = {
    "available": "mixprec.available()",
    "get_precision": "mixprec.get_precision('32-true', 'cpu')",
    "explain": "mixprec.explain('32-true', 'cpu')",
    "register": "mixprec.register(object(), name='inner')",
}


@pytest.mark.parametrize("call", CALLBACKS, ids=list(CALLBACKS))
def test_a_hook_calling_mixprec_during_discovery_is_a_reported_failure_not_a_deadlock(site: Site, call: str) -> None:
    ledger_events(site)
    hook = f"{CALLBACKS[call]}\nreturn [{backend('eager', policy='p')}]"
    site.install("tw-eager", entry_points={"eager": "tw_eager"}, modules={"tw_eager": plugin(hook=hook)})

    with pytest.warns(mixprec.PrecisionWarning, match="eager"):
        failed = _within_patience(lambda: {r.plugin: r.reason for r in mixprec.available() if r.status == "failed"})

    assert "mixprec was called while it was loading plugins" in failed["eager"]
    assert mixprec.get_precision("32-true", "cpu").mixprec_backend == "core"


def test_a_plugin_module_calling_mixprec_at_import_is_a_reported_failure_not_a_deadlock(site: Site) -> None:
    ledger_events(site)
    site.install("tw-eager", entry_points={"eager": "tw_eager"}, modules={"tw_eager": plugin(body="mixprec.explain()")})

    with pytest.warns(mixprec.PrecisionWarning, match="eager"):
        failed = _within_patience(lambda: {r.plugin: r.reason for r in mixprec.available() if r.status == "failed"})

    assert "importing 'tw_eager' raised PluginError: mixprec was called while it was loading plugins" in failed["eager"]


def test_a_hook_calling_register_while_it_is_registered_is_a_plugin_error_not_a_deadlock() -> None:
    def hook() -> list[mixprec.Backend]:
        mixprec.register(_plugin(lambda: [_backend("inner")], name="inner"))
        return [_backend()]

    with pytest.raises(mixprec.PluginError, match="mixprec was called while it was loading plugins"):
        _within_patience(lambda: mixprec.register(_plugin(hook)))

    assert not {"inproc", "inner"} & _backends()


def test_another_thread_waits_for_discovery_instead_of_being_refused(site: Site) -> None:
    ledger_events(site)
    slow = "import time; time.sleep(0.3)"
    site.install("tw-slow", entry_points={"slow": "tw_slow"}, modules={"tw_slow": plugin(body=slow, hook="return []")})
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(mixprec.available()))
    first.start()

    second = _within_patience(lambda: mixprec.get_precision("32-true", "cpu"))
    first.join(PATIENCE_S)

    assert second.mixprec_backend == "core"
    assert len(results) == 1
