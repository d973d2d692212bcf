"""Isolation: a failing plugin or policy is reported, warned about once and skipped; the rest keep working."""

from __future__ import annotations

import json
import warnings

import pytest

import mixprec
from mixprec import cli
from tests.core.throwaway import FAKE_DEVICE, backend, install_backend, ledger_events, plugin, policy
from tests.distributions import Site


def _assert_healthy_backends_still_work() -> None:
    assert mixprec.get_precision("bf16-mixed", FAKE_DEVICE).mixprec_backend == "good"
    assert mixprec.get_precision("32-true", "cpu").mixprec_backend == "core"


def _failed_plugins() -> dict[str, tuple[str | None, str]]:
    return {
        r.plugin: (r.distribution, r.reason) for r in mixprec.available() if r.status == "failed" and not r.precision
    }


def _install_broken_plugin(site: Site, *, body: str = "", hook: str | None = None) -> None:
    ledger_events(site)
    site.install("tw-broken", entry_points={"broken": "tw_broken"}, modules={"tw_broken": plugin(body=body, hook=hook)})


@pytest.fixture
def good(site: Site) -> str:
    """A healthy backend "good" for FAKE_DEVICE, installed beside whatever breaks."""
    return install_backend(site, "good")


@pytest.mark.usefixtures("good")
def test_plugin_whose_import_raises_is_skipped_and_reported(site: Site) -> None:
    _install_broken_plugin(site, body="raise ImportError('needs libbroken.so')")

    with pytest.warns(mixprec.PrecisionWarning, match="broken"):
        failed = _failed_plugins()

    distribution, reason = failed["broken"]
    assert distribution == "tw-broken"
    assert "ImportError: needs libbroken.so" in reason
    _assert_healthy_backends_still_work()


@pytest.mark.usefixtures("good")
def test_plugin_whose_hook_raises_is_skipped_and_reported(site: Site) -> None:
    _install_broken_plugin(site, hook="raise RuntimeError('hook exploded')")

    with pytest.warns(mixprec.PrecisionWarning, match="broken"):
        failed = _failed_plugins()

    assert "RuntimeError: hook exploded" in failed["broken"][1]
    _assert_healthy_backends_still_work()


@pytest.mark.usefixtures("good")
@pytest.mark.parametrize(
    "returned",
    ["None", "'bf16-mixed'", "{'name': 'x'}", "[None]", "[mixprec.Availability.available()]"],
    ids=["none", "string", "dict", "list-of-none", "list-of-availability"],
)
def test_plugin_whose_hook_returns_no_backends_is_skipped_and_reported(site: Site, returned: str) -> None:
    _install_broken_plugin(site, hook=f"return {returned}")

    with pytest.warns(mixprec.PrecisionWarning, match="broken"):
        failed = _failed_plugins()

    assert "mixprec.Backend" in failed["broken"][1]
    _assert_healthy_backends_still_work()


@pytest.mark.usefixtures("good")
@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("name", "'Not A Name'", "name 'Not A Name'"),
        ("precisions", "()", "precisions ()"),
        ("policy", "'not a module!'", "policy 'not a module!'"),
        ("device_type", "'CUDA'", "device_type 'CUDA'"),
        ("priority", "'high'", "priority 'high'"),
        ("precisions", "('auto',)", "reserved"),
        ("precisions", "('bf16-mixed', 'bf16-mixed')", "twice"),
        ("unsupported", "{'fsdp': ''}", "unsupported"),
    ],
    ids=["name", "no-precisions", "policy", "device-type", "priority", "reserved-precision", "repeat", "unsupported"],
)
def test_plugin_describing_a_malformed_backend_is_skipped_and_reported(
    site: Site, field: str, value: str, complaint: str
) -> None:
    fields = {"name": "'bad'", "device_type": "'cpu'", "precisions": "('bf16-mixed',)", "policy": "'tw_broken.policy'"}
    arguments = ", ".join(f"{k}={v}" for k, v in {**fields, field: value}.items())
    _install_broken_plugin(site, hook=f"return [mixprec.Backend({arguments})]")

    with pytest.warns(mixprec.PrecisionWarning, match="broken"):
        failed = _failed_plugins()

    assert "Invalid Backend description" in failed["broken"][1]
    assert complaint in failed["broken"][1]
    _assert_healthy_backends_still_work()


@pytest.mark.usefixtures("good")
def test_plugin_describing_one_backend_twice_is_skipped_whole(site: Site) -> None:
    described = backend("twice-a", policy="tw_broken.policy"), backend("twice-a", policy="tw_broken.policy")
    _install_broken_plugin(site, hook=f"return [{', '.join(described)}]")

    with pytest.warns(mixprec.PrecisionWarning, match="twice"):
        failed = _failed_plugins()

    assert "describes the backend 'twice-a' twice" in failed["broken"][1]
    assert all(r.backend != "twice-a" for r in mixprec.available())


POLICY_FAULTS = {
    "import-error": ("raise ImportError('no driver')", "failed to import: ImportError: no driver"),
    "missing-create": (policy().replace("def create(", "def _create("), "lacks create"),
    "availability-raises": (
        policy().replace("    status, reason =", "    raise OSError('probe crashed')\n    status, reason ="),
        "availability() raised OSError: probe crashed",
    ),
    "availability-returns-text": (
        policy().replace("    status, reason =", "    return 'yes'\n    status, reason ="),
        "returned 'yes', not a mixprec.Availability",
    ),
    "availability-invents-a-status": (policy({"bf16-mixed": ("maybe", "")}), "status 'maybe' must be one of"),
    "availability-reason-not-a-str": (
        policy().replace(
            "    status, reason = ANSWERS",
            "    return mixprec.Availability('available', 42)\n    status, reason = ANSWERS",
        ),
        "reason 42 must be a str",
    ),
    "availability-forged-past-its-checks": (
        policy().replace(
            "    status, reason = ANSWERS",
            "    answer = mixprec.Availability('available')\n"
            "    object.__setattr__(answer, 'reason', ['not', 'text'])\n"
            "    return answer\n"
            "    status, reason = ANSWERS",
        ),
        "a reason of type list, not a str",
    ),
    "device-count-raises": (
        policy().replace("def device_count():", "def device_count():\n    raise OSError('driver gone')"),
        "device_count() raised OSError: driver gone",
    ),
    "device-count-not-an-int": (
        policy().replace("    return 1\n", "    return '1'\n"),
        "device_count() returned '1', not a non-negative int",
    ),
    "device-count-a-bool": (policy().replace("    return 1\n", "    return True\n"), "device_count() returned True"),
    "device-count-negative": (policy().replace("    return 1\n", "    return -1\n"), "device_count() returned -1"),
}


@pytest.mark.usefixtures("good")
@pytest.mark.parametrize("fault", POLICY_FAULTS, ids=list(POLICY_FAULTS))
def test_failing_policy_makes_its_backend_failed_and_others_keep_working(site: Site, fault: str) -> None:
    source, complaint = POLICY_FAULTS[fault]
    # Priority 100: the failed backend would win every selection if it could run.
    site.install(
        "tw-faulty",
        entry_points={"faulty": "tw_faulty"},
        modules={
            "tw_faulty": plugin(backend("faulty", precisions=("bf16-mixed",), policy="tw_faulty.policy", priority=100)),
            "tw_faulty.policy": source,
        },
    )

    with pytest.warns(mixprec.PrecisionWarning, match="faulty"):
        explanation = mixprec.explain("bf16-mixed", FAKE_DEVICE)

    faulty = next(c for c in explanation.candidates if c.backend == "faulty")
    assert faulty.status == "failed"
    assert complaint in faulty.reason
    assert faulty.distribution == "tw-faulty"
    assert explanation.backend == "good"
    _assert_healthy_backends_still_work()
    assert ("faulty", "bf16-mixed", "failed") in {(r.backend, r.precision, r.status) for r in mixprec.available()}


def test_each_failing_plugin_is_warned_about_once(site: Site) -> None:
    ledger_events(site)
    site.install("tw-one", entry_points={"one": "tw_one"}, modules={"tw_one": plugin(body="raise ImportError('x')")})
    site.install("tw-two", entry_points={"two": "tw_two"}, modules={"tw_two": plugin(hook="raise KeyError('y')")})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixprec.available()
        mixprec.get_precision("32-true", "cpu")
        mixprec.explain("32-true", "cpu")

    messages = [str(w.message) for w in caught if issubclass(w.category, mixprec.PrecisionWarning)]
    assert len(messages) == 2
    assert any("'one' from distribution tw-one" in m for m in messages)
    assert any("'two' from distribution tw-two" in m for m in messages)


def test_failing_policy_is_warned_about_once(site: Site) -> None:
    ledger_events(site)
    site.install(
        "tw-faulty",
        entry_points={"faulty": "tw_faulty"},
        modules={
            "tw_faulty": plugin(backend("faulty", policy="tw_faulty.policy")),
            "tw_faulty.policy": POLICY_FAULTS["availability-raises"][0],
        },
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixprec.available()
        mixprec.explain("bf16-mixed", FAKE_DEVICE)
        mixprec.explain("16-mixed", FAKE_DEVICE)
        mixprec.explain("auto", FAKE_DEVICE)

    messages = [str(w.message) for w in caught if issubclass(w.category, mixprec.PrecisionWarning)]
    assert len(messages) == 1
    assert "backend 'faulty' of plugin 'faulty' from distribution tw-faulty 1.0 failed" in messages[0]


def test_mixprec_list_shows_a_failed_plugin_with_its_distribution(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_broken_plugin(site, body="raise ImportError('needs libbroken.so')")

    with pytest.warns(mixprec.PrecisionWarning):
        assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    assert cli.main(["list", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)

    failed_line = next(line for line in text.splitlines() if line.strip().startswith("broken"))
    assert "tw-broken 1.0" in failed_line
    assert "needs libbroken.so" in failed_line
    (entry,) = payload["failed_plugins"]
    assert (entry["plugin"], entry["distribution"], entry["version"]) == ("broken", "tw-broken", "1.0")
    assert "needs libbroken.so" in entry["error"]
