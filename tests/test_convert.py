"""convert_input/convert_output of mixprec's autocast precision: exactly Lightning's ``MixedPrecision`` results.

mixprec converts plain containers (dict, list, tuple, namedtuple) itself, for speed; these tests
hold it to Lightning's ``apply_to_collection`` semantics over any nesting hypothesis can build:
floating tensors cast, every other value untouched (the same object), the same container types.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict, defaultdict, namedtuple
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.plugins.precision import MixedPrecision

import mixprec
from mixprec.precision import MIXED_DTYPES

Pair = namedtuple("Pair", ["first", "second"])


@dataclasses.dataclass
class Record:
    value: Any
    other: Any = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    value: Any


class Labels(tuple):  # type: ignore[type-arg]
    """A tuple subclass that is not a namedtuple."""


DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
    torch.complex64,
)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=2))
    tensor = torch.arange(int(torch.Size(shape).numel())).reshape(shape).to(dtype)
    if dtype.is_floating_point and draw(st.booleans()):
        return torch.nn.Parameter(tensor, requires_grad=False)
    return tensor


LEAVES = st.one_of(
    tensors(),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.binary(max_size=3),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text(max_size=2)
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.builds(Pair, children, children),
        st.builds(Record, children, children),
        st.dictionaries(keys, children, max_size=3).map(OrderedDict),
        st.dictionaries(keys, children, max_size=3).map(lambda d: defaultdict(list, d)),
        st.lists(children, max_size=3).map(Labels),
    )


BATCHES = st.recursive(LEAVES, containers, max_leaves=12)


@pytest.fixture(scope="module", params=["bf16-mixed", "16-mixed"])
def pair(request: pytest.FixtureRequest) -> tuple[Any, MixedPrecision]:
    """mixprec's object and Lightning's, for one precision on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixprec.PrecisionWarning)
        ours = mixprec.get_precision(request.param, "cpu", backend="cpu")
    return ours, MixedPrecision(request.param, "cpu")


def outcome(convert: Any, data: Any) -> Any:
    """The converted data, or the type of the exception converting it raised."""
    try:
        return convert(data)
    except Exception as exc:
        return type(exc)


def assert_same(original: Any, ours: Any, theirs: Any) -> None:
    """``ours`` is what ``theirs`` is: same types and values throughout, the same objects left untouched."""
    assert type(ours) is type(theirs)
    if isinstance(theirs, torch.Tensor):
        assert ours.dtype == theirs.dtype
        assert torch.equal(ours, theirs)
        assert (ours is original) == (theirs is original)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        if isinstance(theirs, defaultdict):
            assert ours.default_factory is theirs.default_factory
        for key in theirs:
            assert_same(original[key], ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs)
        for before, a, b in zip(original, ours, theirs, strict=True):
            assert_same(before, a, b)
    elif dataclasses.is_dataclass(theirs):
        for f in dataclasses.fields(theirs):
            assert_same(getattr(original, f.name), getattr(ours, f.name), getattr(theirs, f.name))
    else:
        assert ours == theirs


@settings(max_examples=300, deadline=None)
@given(data=BATCHES)
def test_convert_input_gives_lightnings_result_for_any_nesting(pair: tuple[Any, MixedPrecision], data: Any) -> None:
    ours, theirs = pair
    assert_same(data, outcome(ours.convert_input, data), outcome(theirs.convert_input, data))


@settings(max_examples=300, deadline=None)
@given(data=BATCHES)
def test_convert_output_gives_lightnings_result_for_any_nesting(pair: tuple[Any, MixedPrecision], data: Any) -> None:
    ours, theirs = pair
    assert_same(data, outcome(ours.convert_output, data), outcome(theirs.convert_output, data))


@given(value=tensors())
def test_frozen_dataclass_is_refused_as_lightning_refuses_it(pair: tuple[Any, MixedPrecision], value: Any) -> None:
    ours, theirs = pair
    assert outcome(ours.convert_input, Frozen(value)) is outcome(theirs.convert_input, Frozen(value)) is ValueError


def test_convert_output_casts_to_the_default_dtype_at_call_time(pair: tuple[Any, MixedPrecision]) -> None:
    ours, _ = pair
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = ours.convert_output({"loss": torch.ones(2, dtype=torch.bfloat16)})
    finally:
        torch.set_default_dtype(previous)
    assert out["loss"].dtype == torch.float64


def test_convert_input_casts_floating_tensors_to_the_autocast_dtype(pair: tuple[Any, MixedPrecision]) -> None:
    ours, _ = pair
    x, labels = ours.convert_input([torch.ones(2), torch.ones(2, dtype=torch.int64)])
    assert x.dtype == MIXED_DTYPES[ours.precision]
    assert labels.dtype == torch.int64
