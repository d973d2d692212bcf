"""Discovery: installed plugins are found through their entry points, lazily, once, under a lock."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import mixprec
from tests.core.throwaway import FAKE_DEVICE, backend, install_backend, ledger_events, plugin, policy
from tests.distributions import Site


def test_backend_from_an_installed_distribution_is_found_and_resolvable(site: Site) -> None:
    install_backend(site, "alpha", distribution="mixprec-alpha")

    precision = mixprec.get_precision("bf16-mixed", FAKE_DEVICE)

    assert precision.mixprec_backend == "alpha"
    records = [r for r in mixprec.available() if r.backend == "alpha"]
    assert {(r.precision, r.status, r.distribution, r.version) for r in records} == {
        ("bf16-mixed", "available", "mixprec-alpha", "1.0"),
        ("16-mixed", "available", "mixprec-alpha", "1.0"),
    }


def test_installed_plugins_are_not_imported_before_first_use(site: Site) -> None:
    package = install_backend(site, "alpha")

    assert package not in sys.modules
    mixprec.available()
    assert package in sys.modules


def test_discovery_imports_each_plugin_and_calls_its_hook_once_per_process(site: Site) -> None:
    events = ledger_events(site)
    install_backend(site, "alpha")

    mixprec.get_precision("bf16-mixed", FAKE_DEVICE)
    mixprec.get_precision("16-mixed", FAKE_DEVICE)
    mixprec.get_precision("32-true", "cpu")
    mixprec.explain("auto", FAKE_DEVICE)
    mixprec.available()

    assert events == [("import", "tw_alpha"), ("hook", "tw_alpha")]


def test_policy_module_is_imported_only_when_its_backend_is_first_asked(site: Site) -> None:
    install_backend(site, "alpha")

    mixprec.get_precision("32-true", "cpu")
    assert "tw_alpha" in sys.modules
    assert "tw_alpha.policy" not in sys.modules

    mixprec.get_precision("bf16-mixed", FAKE_DEVICE)
    assert "tw_alpha.policy" in sys.modules


def test_concurrent_first_calls_discover_once_and_each_get_a_new_correct_object(site: Site) -> None:
    events = ledger_events(site)
    # A slow import keeps discovery running while every other thread arrives.
    site.install(
        "tw-slow",
        entry_points={"slow": "tw_slow"},
        modules={
            "tw_slow": plugin(backend("slow", policy="tw_slow.policy"), body="import time; time.sleep(0.2)"),
            "tw_slow.policy": policy(),
        },
    )
    threads = 16
    start = threading.Barrier(threads)

    def first_call(_: int) -> object:
        start.wait()
        return mixprec.get_precision("bf16-mixed", FAKE_DEVICE)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(first_call, range(threads)))

    assert events == [("import", "tw_slow"), ("hook", "tw_slow")]
    assert all(r.precision == "bf16-mixed" and r.mixprec_backend == "slow" for r in results)  # type: ignore[attr-defined]
    assert len({id(r) for r in results}) == threads
