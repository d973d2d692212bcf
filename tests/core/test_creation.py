"""What a backend's create() raises names the backend: PluginError for a bug, the same PrecisionError for a refusal."""

from __future__ import annotations

import pytest

import mixprec
from tests.core.throwaway import FAKE_DEVICE, install_backend, policy
from tests.distributions import Site

ORIGIN = "Backend 'acc' (plugin 'acc' from distribution tw-acc 1.0)"


def _install_creating(site: Site, statement: str) -> None:
    """Backend "acc" whose create() runs ``statement`` first."""
    package = install_backend(site, "acc")
    source = policy().replace("def create(request):\n", f"def create(request):\n    {statement}\n")
    (site.root / package / "policy.py").write_text(source)


def test_a_create_that_raises_is_a_plugin_error_naming_the_backend_and_its_distribution(site: Site) -> None:
    _install_creating(site, "raise KeyError('scale')")

    with pytest.raises(mixprec.PluginError) as raised:
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)

    message = str(raised.value)
    assert message.startswith(f"{ORIGIN} failed to build 'bf16-mixed' on fakeacc: its create() raised KeyError")
    assert isinstance(raised.value.__cause__, KeyError)


def test_a_precision_error_from_create_keeps_its_type_and_gains_the_backends_name(site: Site) -> None:
    _install_creating(site, "raise mixprec.OptionError(f'Unknown option(s) {sorted(request.options)}: use seed.')")

    with pytest.raises(mixprec.OptionError) as raised:
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE, colour="red")

    assert str(raised.value) == f"{ORIGIN}: Unknown option(s) ['colour']: use seed."


def test_a_type_error_from_create_is_a_plugin_error_too(site: Site) -> None:
    _install_creating(site, "raise TypeError('create() got an unexpected keyword')")

    with pytest.raises(mixprec.PluginError, match="its create\\(\\) raised TypeError"):
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)


def test_an_option_error_from_the_builders_names_the_backend_that_used_them() -> None:
    with pytest.raises(mixprec.OptionError) as raised:
        mixprec.get_precision("16-mixed", "cpu", init_scale=-1.0)

    assert str(raised.value).startswith("Backend 'cpu' (plugin 'cpu' from distribution mixprec-cpu ")
