"""Generated input against the core's public API: only PrecisionError subclasses or TypeError escape, each explained.

The inputs are the classes of input that once leaked other exceptions: precisions that are ``int``
subclasses or huge integers, device strings with absurdly long indices, ``torch.device`` objects
and junk, GradScaler options at the edges of what a float32 scale and an int32 counter hold,
and plugin objects for ``register()`` whose hooks return or raise anything. The examples are
derandomised and no database is kept, so a run in CI is the same run every time.
"""

from __future__ import annotations

import enum
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import mixprec
from mixprec._registry import registry

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CANONICAL = (*mixprec.STANDARD_CONTRACTS, "auto")
ALIASES = ("16", "bf16", "32", "64", 16, 32, 64)


class Bits(enum.IntEnum):
    HALF = 16
    FULL = 32
    ODD = 8


class Sneaky(int):
    """An int subclass whose comparisons, hash and printing all lie."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "bf16-mixed"

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class Text(str):
    """A str subclass with its own equality and hash."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 1


def _junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),
        st.binary(max_size=8),
        st.lists(st.integers(), max_size=2),
        st.builds(object),
        st.builds(dict),
    )


PRECISIONS = st.one_of(
    st.sampled_from([*CANONICAL, *ALIASES]),
    st.text(max_size=20),
    st.integers(),
    st.sampled_from([10**5000, -(2**70), 2**64]),
    st.sampled_from(list(Bits)),
    st.builds(Sneaky, st.sampled_from([8, 16, 32, 64, 10**40])),
    st.builds(Text, st.sampled_from([*mixprec.STANDARD_CONTRACTS, "auto", "bf16-mixd"])),
)

DEVICE_TYPES = st.sampled_from(["cpu", "cuda", "mps", "xpu", "xla", "meta", "fakeacc", "gpu", "CPU"])
DEVICES = st.one_of(
    st.none(),
    st.just("auto"),
    DEVICE_TYPES,
    st.builds(lambda kind, index: f"{kind}:{index}", DEVICE_TYPES, st.integers(min_value=0)),
    st.builds(lambda kind, digits: f"{kind}:{'7' * digits}", DEVICE_TYPES, st.integers(1, 6000)),
    st.text(max_size=20),
    st.builds(Text, DEVICE_TYPES),
    st.builds(torch.device, st.sampled_from(["cpu", "meta", "cuda", "cpu:0", "cuda:3", "cpu:5", "mps"])),
)
BACKENDS = st.one_of(st.none(), st.sampled_from(["core", "cpu", "cuda", "nope"]), st.text(max_size=12), st.integers())
TARGETS = st.one_of(st.sampled_from(["fabric", "trainer"]), st.text(max_size=8), st.none())
STRATEGIES = st.one_of(st.none(), st.sampled_from(["fsdp", "ddp", "deepspeed"]), st.text(max_size=8), st.integers())
#: Requests that mostly resolve, to reach selection and construction with the other arguments generated.
SERVED = st.tuples(
    st.sampled_from(["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true", "auto", 32, 16]),
    st.sampled_from([None, "cpu", "cpu:0", "auto", torch.device("cpu")]),
)


def _only_precision_or_type_errors(call: Callable[[], object]) -> object:
    """``call()``'s result; a PrecisionError or TypeError must have a message, anything else fails the property."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _returned(call())
        except (mixprec.PrecisionError, TypeError) as exc:
            refused = exc
    assert str(refused).strip(), f"{type(refused).__name__} without a message"
    event(f"raised {type(refused).__name__}")
    return None


def _returned(result: object) -> object:
    event("returned")
    return result


@PROPERTY
@given(precision=PRECISIONS, device=DEVICES)
def test_get_precision_raises_only_precision_or_type_errors_for_any_precision_and_device(
    precision: Any, device: Any
) -> None:
    _only_precision_or_type_errors(lambda: mixprec.get_precision(precision, device))


@PROPERTY
@given(request=SERVED, backend=BACKENDS, target=TARGETS, strategy=STRATEGIES)
def test_get_precision_raises_only_precision_or_type_errors_for_any_backend_target_and_strategy(
    request: tuple[Any, Any], backend: Any, target: Any, strategy: Any
) -> None:
    precision, device = request
    _only_precision_or_type_errors(
        lambda: mixprec.get_precision(precision, device, backend=backend, target=target, strategy=strategy)
    )


@PROPERTY
@given(precision=st.one_of(PRECISIONS, _junk()), device=st.one_of(DEVICES, st.integers(), _junk()))
def test_get_precision_raises_only_precision_or_type_errors_for_values_of_the_wrong_type(
    precision: Any, device: Any
) -> None:
    _only_precision_or_type_errors(lambda: mixprec.get_precision(precision, device))


@PROPERTY
@given(precision=st.one_of(PRECISIONS, _junk()), device=st.one_of(DEVICES, _junk()), backend=BACKENDS)
def test_explain_and_available_raise_only_precision_or_type_errors(precision: Any, device: Any, backend: Any) -> None:
    explanation = _only_precision_or_type_errors(lambda: mixprec.explain(precision, device, backend=backend))
    if explanation is not None:
        assert str(explanation)
    _only_precision_or_type_errors(lambda: mixprec.available(device))


@PROPERTY
@given(kind=st.one_of(st.text(max_size=10), _junk()), index=st.one_of(st.integers(), _junk()))
def test_data_types_refuse_bad_fields_with_precision_errors(kind: Any, index: Any) -> None:
    _only_precision_or_type_errors(lambda: mixprec.Device(kind, index))
    _only_precision_or_type_errors(lambda: mixprec.Device.parse(kind))
    _only_precision_or_type_errors(lambda: mixprec.Availability(kind, index))


FLOAT_EDGES = st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1.1754943508222875e-38, 3.4028234663852886e38, 3.5e38])
#: Mostly numbers a user might pass, some at float32's and int32's edges, a few of the wrong kind.
NUMBERS = st.one_of(
    st.floats(min_value=1e-45, max_value=1e45),
    st.integers(min_value=1, max_value=2**20),
    FLOAT_EDGES,
    st.floats(),
    st.sampled_from([2**31 - 1, 2**31, 2**63, 2**64, 10**400, -1, True, None, "2.0"]),
)
SCALER_OPTIONS = st.dictionaries(
    st.sampled_from(["init_scale", "growth_factor", "backoff_factor", "growth_interval"]), NUMBERS, max_size=2
)


def _steps_keep_the_scale_and_weights_finite(precision: Any) -> None:
    """Two training steps through ``precision``: its scale stays positive and finite, the weights finite."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        with precision.forward_context():
            loss = model(torch.randn(8, 4)).float().pow(2).mean()
        precision.backward(loss, model)
        precision.optimizer_step(optimizer)
        optimizer.zero_grad()
        scale = precision.scaler.get_scale()
        assert 0 < scale < float("inf"), f"the GradScaler's scale became {scale}"
        assert all(torch.isfinite(p).all() for p in model.parameters()), "the weights are no longer finite"


@PROPERTY
@given(options=SCALER_OPTIONS)
@example(options={"init_scale": 3.5e38})
@example(options={"init_scale": 5e-324})
@example(options={"growth_interval": 2**63})
@example(options={"init_scale": 1e30, "backoff_factor": 5e-324})
@example(options={"enabled": False})
def test_grad_scaler_options_are_refused_or_train_with_a_finite_scale(options: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision = _only_precision_or_type_errors(
            lambda: mixprec.get_precision("16-mixed", "cpu", backend="cpu", **options)
        )
        if precision is not None:
            _steps_keep_the_scale_and_weights_finite(precision)


def _valid_backend(name: str) -> mixprec.Backend:
    return mixprec.Backend(name, "fakeacc", ("bf16-mixed",), "tw_nowhere.policy")


BACKEND_FIELDS = st.fixed_dictionaries(
    {
        "name": st.one_of(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True), st.text(max_size=8), _junk()),
        "device_type": st.one_of(st.sampled_from(["fakeacc", "*", "cpu"]), st.text(max_size=6), _junk()),
        "precisions": st.one_of(
            st.lists(st.sampled_from(["bf16-mixed", "acme-x", "auto", "16", "Bad Name"]), max_size=3).map(tuple),
            st.text(max_size=6),
            _junk(),
        ),
        "policy": st.one_of(st.just("tw_nowhere.policy"), st.text(max_size=6), _junk()),
    },
    optional={
        "priority": st.one_of(st.integers(), _junk()),
        "unsupported": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2), _junk()),
        "description": st.one_of(st.text(max_size=6), _junk()),
        "contracts": st.one_of(st.dictionaries(st.text(max_size=4), _junk(), max_size=1), _junk()),
    },
)


def _hook_result(kind: str, fields: dict[str, Any], error: type[Exception]) -> Callable[[], Any]:
    """A hook body: return a generated description, a value that is no list of backends, or fail in some way."""

    def broken_iterator() -> Iterator[mixprec.Backend]:
        yield _valid_backend("gen-ok")
        raise error("iterated too far")

    hooks: dict[str, Callable[[], Any]] = {
        "generated-backend": lambda: [mixprec.Backend(**fields)],
        "one-backend": lambda: _valid_backend("plain"),
        "raises": lambda: (_ for _ in ()).throw(error("hook failed")),
        "iterator-raises": broken_iterator,
        "not-a-list": lambda: fields,
        "list-of-junk": lambda: [fields, None],
        "calls-back": lambda: [mixprec.available(), _valid_backend("callback")][1:],
    }
    return hooks[kind]


PLUGIN_KINDS = st.sampled_from(
    ["generated-backend", "one-backend", "raises", "iterator-raises", "not-a-list", "list-of-junk", "calls-back"]
)
ERRORS = st.sampled_from([ValueError, KeyError, RuntimeError, TypeError, OSError, mixprec.PluginError])
DUNDER_NAMES = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.binary(max_size=4))
NAMES = st.one_of(st.none(), st.text(max_size=8), st.integers())


@PROPERTY
@given(
    kind=PLUGIN_KINDS,
    fields=BACKEND_FIELDS,
    error=ERRORS,
    dunder=DUNDER_NAMES,
    name=NAMES,
    bare=st.one_of(st.none(), st.integers(), st.text(max_size=4), st.builds(object)),
    use_bare=st.booleans(),
)
def test_register_raises_only_plugin_or_type_errors_and_keeps_the_registry_whole(
    kind: str, fields: dict[str, Any], error: type[Exception], dunder: Any, name: Any, bare: Any, use_bare: bool
) -> None:
    plugin: Any = bare
    if not use_bare:
        plugin = types.SimpleNamespace(mixprec_backends=mixprec.hookimpl(_hook_result(kind, fields, error)))
        if dunder is not None:
            plugin.__name__ = dunder
    before = set(registry.snapshot().backends)
    try:
        registered = _only_precision_or_type_errors(lambda: mixprec.register(plugin, name=name))
        after = set(registry.snapshot().backends)
        if registered is None:
            assert after == before, "a refused plugin left backends behind"
        else:
            assert type(registered) is str
            assert after >= before
    finally:
        registry.reset()
