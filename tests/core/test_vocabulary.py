"""The contract vocabulary: one torch-free table that the precisions, dtypes, options and capabilities derive from.

Capability names are checked where a backend describes itself: a misspelt one fails the plugin as
it loads, naming the known ones, instead of surfacing only when the conformance suite runs.
"""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

import mixprec
import mixprec.testing
from mixprec import _contract, _inputs, _scaler, _vocabulary, precision
from mixprec._registry import registry
from tests.core.throwaway import FAKE_DEVICE, ledger_events, plugin, policy
from tests.distributions import Site


def test_the_vocabulary_imports_nothing_but_the_standard_library() -> None:
    tree = ast.parse(inspect.getsource(_vocabulary))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported == {"__future__", "collections.abc", "types"}


def test_the_standard_contracts_are_the_vocabularys_precisions_in_its_order() -> None:
    assert tuple(mixprec.STANDARD_CONTRACTS) == _vocabulary.STANDARD_PRECISIONS == _inputs.STANDARD_PRECISIONS


@pytest.mark.parametrize("name", [*_vocabulary.MIXED_PRECISIONS, *_vocabulary.TRUE_PRECISIONS])
def test_each_standard_contract_computes_in_the_vocabularys_dtype(name: str) -> None:
    dtype = {**_vocabulary.MIXED_PRECISIONS, **_vocabulary.TRUE_PRECISIONS}[name]
    assert mixprec.STANDARD_CONTRACTS[name].compute_dtype == dtype


def test_the_builders_dtypes_and_precisions_are_the_vocabularys() -> None:
    assert {p: str(d).removeprefix("torch.") for p, d in precision.MIXED_DTYPES.items()} == dict(
        _vocabulary.MIXED_PRECISIONS
    )
    assert set(precision.TRUE_PRECISIONS) == set(_vocabulary.TRUE_PRECISIONS)
    assert precision.SCALER_OPTIONS is _scaler.SCALER_OPTIONS is _vocabulary.SCALER_OPTIONS


def test_every_dtype_of_the_vocabulary_is_a_torch_dtype() -> None:
    assert all(isinstance(getattr(torch, name, None), torch.dtype) for name in _contract.DTYPES)


def test_the_suites_capabilities_are_the_vocabularys() -> None:
    assert mixprec.testing.CAPABILITIES is _vocabulary.CAPABILITIES


def test_a_backend_declaring_an_unknown_capability_is_invalid_naming_the_known_ones() -> None:
    with pytest.raises(mixprec.PluginError, match=r"unknown capabilities \['lbfgs-closure'\].*'lbfgs_closure'"):
        mixprec.Backend("typo", "cpu", ("bf16-mixed",), "nowhere.policy", unsupported={"lbfgs-closure": "no"})


def test_a_contract_declaring_an_unknown_capability_is_invalid_naming_the_known_ones() -> None:
    with pytest.raises(mixprec.PluginError, match=r"Invalid Contract: unknown capabilities \['fused'\]"):
        mixprec.Contract("bfloat16", autocast=True, unsupported={"fused": "no"})


def test_known_capabilities_are_kept_with_their_reasons() -> None:
    declared = {name: "not on this device" for name in _vocabulary.CAPABILITIES}
    assert dict(mixprec.Backend("ok", "cpu", ("bf16-mixed",), "p.policy", unsupported=declared).unsupported) == declared


def test_a_plugin_with_a_misspelt_capability_fails_as_it_loads_and_the_rest_keep_working(site: Site) -> None:
    ledger_events(site)
    typo = (
        f"mixprec.Backend(name='typo', device_type={FAKE_DEVICE!r}, precisions=('bf16-mixed',),"
        " policy='typo_policy', unsupported={'fused-optimizers': 'none here'})"
    )
    site.install("typo", entry_points={"typo": "typo_plugin"}, modules={"typo_plugin": plugin(typo)})
    site.install("typo-policy", modules={"typo_policy": policy()})
    registry.reset()
    with pytest.warns(mixprec.PrecisionWarning, match=r"unknown capabilities \['fused-optimizers'\]"):
        snap = registry.snapshot()
    assert "typo" not in snap.backends
    assert "cpu" in snap.backends
