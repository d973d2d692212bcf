"""Errors a user can cause: PrecisionErrors that say what to do, TypeErrors for wrong types, nothing else."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mixprec
from mixprec._inputs import KNOWN_DISTRIBUTIONS, STANDARD_PRECISIONS
from tests.core.throwaway import FAKE_DEVICE, install_backend, ledger_events, plugin
from tests.distributions import Site


def test_unknown_precision_lists_the_valid_ones_and_the_closest_match() -> None:
    with pytest.raises(mixprec.UnknownPrecisionError) as raised:
        mixprec.get_precision("bf16-mixd", "cpu")

    message = str(raised.value)
    assert "Unknown precision 'bf16-mixd'. Did you mean 'bf16-mixed'?" in message
    assert all(name in message for name in STANDARD_PRECISIONS)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("value", [8, -16, 10**5000], ids=["small", "negative", "huge"])
def test_unknown_integer_precision_names_the_integers_lightning_accepts(value: int) -> None:
    with pytest.raises(mixprec.UnknownPrecisionError, match="the integer precisions are 16, 32 and 64"):
        mixprec.get_precision(value, "cpu")


def test_device_type_with_no_backend_installed_names_the_distribution_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A device type with a known distribution that is not installed here (the real ones may all be).
    monkeypatch.setitem(KNOWN_DISTRIBUTIONS, "npu", "mixprec-npu")

    with pytest.raises(mixprec.BackendNotFoundError, match="No backend for device type 'npu' is installed") as raised:
        mixprec.get_precision("bf16-mixed", "npu")

    assert str(raised.value).endswith("pip install mixprec-npu")


def test_device_type_whose_distribution_failed_to_load_says_why(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KNOWN_DISTRIBUTIONS, "npu", "mixprec-npu")
    ledger_events(site)
    site.install("mixprec-npu", entry_points={"npu": "tw_npu"}, modules={"tw_npu": plugin(body="raise OSError('no')")})

    with pytest.warns(mixprec.PrecisionWarning), pytest.raises(mixprec.BackendNotFoundError) as raised:
        mixprec.get_precision("bf16-mixed", "npu")

    assert "mixprec-npu is installed but plugin 'npu'" in str(raised.value)
    assert "OSError: no" in str(raised.value)


def test_device_type_whose_distribution_is_blocked_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPREC_BLOCK", "cpu")

    with pytest.raises(mixprec.BackendNotFoundError, match=r"mixprec-cpu is installed but not loaded \(blocked"):
        mixprec.get_precision("bf16-mixed", "cpu")


def test_installed_backend_that_cannot_run_here_says_why(site: Site) -> None:
    install_backend(site, "acc", answers={"bf16-mixed": ("unavailable", "fakeacc 1.0 has no bfloat16; use '16-mixed'")})

    with pytest.raises(mixprec.BackendUnavailableError, match=r"backend 'acc': fakeacc 1\.0 has no bfloat16"):
        mixprec.get_precision("bf16-mixed", FAKE_DEVICE)


@pytest.mark.parametrize("text", ["cuda:x", "cuda:", ":0", "cuda:-1", "cuda 0", "cuda:0:1", "", "CUDA"])
def test_malformed_device_string_is_named_as_such(text: str) -> None:
    with pytest.raises(mixprec.DeviceError, match=f"Malformed device string {text!r}"):
        mixprec.get_precision("32-true", text)


def test_malformed_device_string_in_capitals_suggests_the_lower_case_one() -> None:
    with pytest.raises(mixprec.DeviceError, match="did you mean 'cuda:1'"):
        mixprec.get_precision("32-true", "CUDA:1")


def test_unknown_device_type_suggests_the_closest_known_one() -> None:
    with pytest.raises(mixprec.DeviceError, match=r"Unknown device type 'cdua'.*Did you mean 'cuda'"):
        mixprec.get_precision("32-true", "cdua")


def test_gpu_is_not_a_device_type_and_the_error_names_the_ones_to_use() -> None:
    with pytest.raises(mixprec.DeviceError, match="use 'cuda'"):
        mixprec.get_precision("32-true", "gpu")


WRONG_TYPES: dict[str, dict[str, Any]] = {
    "precision-none": {"precision": None},
    "precision-float": {"precision": 16.0},
    "precision-bool": {"precision": True},
    "precision-bytes": {"precision": b"16-mixed"},
    "device-int": {"device": 0},
    "device-object": {"device": object()},
    "backend-int": {"backend": 1},
    "target-none": {"target": None},
    "strategy-int": {"strategy": 1},
}


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_argument_of_the_wrong_type_is_a_type_error(case: str) -> None:
    arguments: dict[str, Any] = {"precision": "32-true", "device": "cpu", **WRONG_TYPES[case]}

    with pytest.raises(TypeError):
        mixprec.get_precision(**arguments)


def test_float_precision_is_a_type_error_even_after_the_equal_integer_was_resolved() -> None:
    mixprec.get_precision(32, "cpu")

    with pytest.raises(TypeError, match="not float"):
        mixprec.get_precision(32.0, "cpu")  # type: ignore[arg-type]


def test_unknown_target_is_a_precision_error_naming_the_valid_ones() -> None:
    with pytest.raises(mixprec.PrecisionError, match=r"use 'fabric'.*or 'trainer'"):
        mixprec.get_precision("32-true", "cpu", target="deepspeed")


def _only_precision_or_type_errors(call: Any, *args: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(mixprec.PrecisionError, TypeError):
            call(*args)


PRECISION_VALUES = st.one_of(
    st.text(),
    st.sampled_from([*STANDARD_PRECISIONS, "auto", "16", "bf16", "32", "64", "BF16-Mixed", " 32-true"]),
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.binary(),
    st.lists(st.integers(), max_size=2),
)

DEVICE_VALUES = st.one_of(
    st.text(),
    st.from_regex(r"[a-z_]{1,6}(:[0-9]{1,25})?", fullmatch=True),
    st.sampled_from(["cpu", "cpu:0", "cpu:1", "cuda", "cuda:1", "mps", "auto", "meta", "xla:3", "gpu"]),
    st.builds(torch.device, st.sampled_from(["cpu", "meta", "cuda", "cpu:0"])),
    st.integers(),
    st.floats(),
    st.none(),
    st.binary(),
    st.tuples(st.text(), st.integers()),
)


@settings(deadline=None)
@given(precision=PRECISION_VALUES)
def test_arbitrary_precision_values_raise_only_precision_or_type_errors(precision: Any) -> None:
    _only_precision_or_type_errors(mixprec.get_precision, precision, "cpu")
    _only_precision_or_type_errors(mixprec.explain, precision, "cpu")


@settings(deadline=None)
@given(device=DEVICE_VALUES, precision=st.sampled_from(["32-true", "bf16-mixed", "auto"]))
def test_arbitrary_device_values_raise_only_precision_or_type_errors(device: Any, precision: str) -> None:
    _only_precision_or_type_errors(mixprec.get_precision, precision, device)
    _only_precision_or_type_errors(mixprec.explain, precision, device)
